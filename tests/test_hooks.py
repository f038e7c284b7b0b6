"""The model interface v2: every lifecycle hook, through the one loop, single-process and 2-worker DDP.

`HookProbe` is a test-only model that uses every hook the way the methods do: train statistics
in a buffer (CIDer's confounders), a scalar calibrated on validation (CIDer's tau), two optimiser
steps per batch (CIDer's two-step schedule), two parameter groups (MCULoRA's LoRA vs base), routing
by `Batch.available` (MCULoRA's adapters) and floats logged at epoch end (DPFT probabilities). It
is registered only while these tests run, so registry-wide tests never see it.
"""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
from torch import nn

from affectune import MODALITIES
from affectune.data import load
from affectune.loader import preload
from affectune.missing import combination_sampling
from affectune.models import _registry
from affectune.models.base import MERModel, ModelConfig, TrainViews
from affectune.train import load_checkpoint, predict_split, train_loop

SOURCE = "synthetic:mosi?scale=0.05"
OFFSETS = (-0.5, -0.25, 0.0, 0.25, 0.5)  # exact in float32 (the buffer)
BASE = {"model": "hook_probe", "model_config": {"hidden": 8}, "dataset": SOURCE, "epochs": 2,
        "batch_size": 16, "num_threads": 1, "patience": None, "lr": 5e-3}


class HookProbe(MERModel):
    """Pooled features -> per-modality encoder -> head; uses every hook (see the module docstring)."""

    config_class = ModelConfig

    def __init__(self, config: ModelConfig, spec):
        super().__init__(config, spec)
        d = config.hidden
        self.encoders = nn.ModuleDict({m: nn.Linear(spec.dims[m], d) for m in MODALITIES})
        self.absent = nn.Parameter(torch.randn(len(MODALITIES), d) * 0.1)  # used where a modality is absent
        self.head = nn.Linear(d, spec.out_dim)
        self.register_buffer("train_mean", torch.zeros(len(MODALITIES)))  # on_fit_start
        self.register_buffer("offset", torch.zeros(()))  # calibrate
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))  # on_epoch_end
        self.steps_called: list[int] = []
        self.calibrated_on: list[int] = []

    # -- hooks -------------------------------------------------------------------------------
    def on_fit_start(self, ctx) -> None:
        self.head_at_start = self.head.weight.detach().clone()  # the test checks the head's lr of 0
        for k, m in enumerate(MODALITIES):  # mean of valid frames over the whole train split
            valid = ctx.train.valid[m].unsqueeze(-1)  # (N, T, 1)
            self.train_mean[k] = (ctx.train.features[m] * valid).sum() / valid.sum().clamp_min(1) \
                / ctx.train.features[m].shape[-1]

    def train_policy(self, batch, generator) -> TrainViews:
        probs = torch.ones(7)
        masked, combination = combination_sampling(batch, generator, probs)
        return TrainViews(batch, {"masked": masked}, combination={"masked": combination})

    steps_per_batch = 2

    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        self.steps_called.append(step)
        view = views.complete if step == 0 else views["masked"]
        loss = self.task_loss(self(view)["pred"], view.label)
        return {"loss": loss, "task": loss.detach()}

    def param_groups(self, train_config: dict) -> list[dict]:
        head = list(self.head.parameters())
        rest = [p for n, p in self.named_parameters() if not n.startswith("head.")]
        return [{"params": rest}, {"params": head, "lr": 0.0}]  # the head never moves

    def calibrate(self, ctx) -> None:
        self.calibrated_on.append(len(ctx.valid))
        raw_valid = ctx.predict(ctx.valid, self.raw)
        raw_masked = ctx.predict(ctx.valid_masked, self.raw)
        scores = [ctx.selection_score(raw_valid + o, raw_masked + o) for o in OFFSETS]
        best = max(scores) if ctx.direction == "max" else min(scores)
        self.offset.fill_(OFFSETS[scores.index(best)])

    def on_epoch_end(self, epoch: int, ctx) -> dict[str, float]:
        self.epochs_seen += 1
        return {"probe_offset": float(self.offset), "probe_objective": ctx.metrics["objective"]}

    # -- forward -----------------------------------------------------------------------------
    def raw(self, batch) -> torch.Tensor:
        h = 0
        for k, m in enumerate(MODALITIES):
            valid = batch.valid[m].unsqueeze(-1).float()  # (B, T, 1)
            pooled = (batch.features(m) * valid).sum(1) / valid.sum(1).clamp_min(1)  # (B, D)
            here = batch.available[:, k:k + 1].float()  # (B, 1): route by availability
            h = h + here * self.encoders[m](pooled - self.train_mean[k]) + (1 - here) * self.absent[k]
        out = self.head(torch.tanh(h))
        return out.squeeze(-1) if self.is_regression else out

    def forward(self, batch) -> dict:
        return {"pred": self.raw(batch) + self.offset}


def register_probe() -> None:
    if "hook_probe" not in _registry.list_models():
        _registry.register("hook_probe")(HookProbe)


@pytest.fixture(scope="module")
def probe_registered():
    register_probe()
    yield
    _registry._MODELS.pop("hook_probe", None)


@pytest.fixture(scope="module")
def dataset():
    return load(SOURCE)


def _predictions(model, dataset) -> torch.Tensor:
    return predict_split(model, preload(dataset, "valid"), 64)


def _train_recording(dataset, checkpoint_dir: str):
    """train_loop on the probe; returns (outcome, model, reports, validation predictions at the last
    checkpointed epoch)."""
    import affectune.models as models

    built, reports, at_checkpoint = [], [], {}
    original = models.build_model
    models.build_model = lambda *a, **k: built.append(original(*a, **k)) or built[-1]

    def reporter(metrics, saved):
        reports.append(metrics)
        if metrics["best_epoch"] == metrics["epoch"]:  # what the checkpoint holds, predicted by the live model
            at_checkpoint["pred"] = _predictions(built[0], dataset)

    try:
        out = train_loop({**BASE, "checkpoint_dir": checkpoint_dir}, reporter, dataset=dataset)
    finally:
        models.build_model = original
    return out, built[0], reports, at_checkpoint["pred"]


def test_every_hook_runs_in_order_and_survives_a_checkpoint(probe_registered, dataset, tmp_path):
    out, model, reports, pred_at_checkpoint = _train_recording(dataset, str(tmp_path))
    n_batches = len(dataset.splits["train"].ids) // 16  # the small last batch may be dropped
    # on_fit_start: a train statistic (mean audio feature over valid frames) in a buffer
    audio = dataset.splits["train"].features("audio")
    lengths = dataset.splits["train"].lengths["audio"]
    frames = [audio[i, :n] for i, n in enumerate(lengths)]
    expected = float(sum(f.sum() for f in frames) / sum(f.size for f in frames))
    assert float(model.train_mean[1]) == pytest.approx(expected, rel=1e-4)
    # two optimiser steps per batch, in order, over two epochs
    assert model.steps_called[:4] == [0, 1, 0, 1]
    assert len(model.steps_called) in (2 * 2 * n_batches, 2 * 2 * (n_batches + 1))
    assert "train_loss_step1" in reports[0] and "train_loss" in reports[0]
    # two parameter groups: the head's group has lr 0, the encoders' moved
    assert torch.equal(model.head.weight.detach(), model.head_at_start)
    # calibrate saw the validation split only, once per epoch; on_epoch_end's floats are reported
    assert model.calibrated_on == [len(dataset.splits["valid"].ids)] * 2
    assert all(r["probe_offset"] in OFFSETS for r in reports)
    assert int(model.epochs_seen) == 2 and [r["stop"] for r in reports] == [False, True]
    # the checkpoint holds the calibrated state: predictions after load equal those it was saved with
    loaded, _ = load_checkpoint(out.checkpoint_path)
    assert torch.equal(loaded.train_mean, model.train_mean)
    assert torch.equal(_predictions(loaded, dataset), pred_at_checkpoint)


def test_param_group_lr_applies_and_every_parameter_is_grouped(probe_registered, dataset, tmp_path):
    from affectune.models import build_model
    from affectune.train import check_param_groups

    torch.manual_seed(0)
    model = build_model("hook_probe", {"hidden": 8}, dataset.spec())
    with pytest.raises(ValueError, match="leaves trainable parameters out"):
        check_param_groups(model, [{"params": list(model.head.parameters())}])
    with pytest.raises(ValueError, match="is in groups 0 and 1"):
        check_param_groups(model, [{"params": list(model.parameters())}, {"params": list(model.head.parameters())}])


def test_available_routing_ignores_fill_of_an_absent_modality(probe_registered, dataset):
    from affectune.missing import drop_modalities
    from affectune.models import build_model

    model = build_model("hook_probe", {"hidden": 8}, dataset.spec()).eval()
    batch = preload(dataset, "valid").batch(slice(0, 6))
    available = torch.ones(6, 3, dtype=torch.bool)
    available[:, 1] = False
    dropped = drop_modalities(batch, available)
    assert not dropped.available[:, 1].any() and dropped.available[:, [0, 2]].all()
    noisy = dropped.replace(audio=torch.randn_like(dropped.audio))  # gaussian instead of zero fill
    with torch.no_grad():
        assert torch.equal(model.predict(dropped), model.predict(noisy))


# ----------------------------------------------------------------------------- 2-worker DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    register_probe()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out, model, reports, pred = _train_recording(load(SOURCE), os.path.join(out_dir, "ckpt"))
        torch.save({"state": model.state_dict(), "reports": [(r["probe_offset"], r["objective"]) for r in reports],
                    "pred": pred, "checkpoint": out.checkpoint_path}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_worker_ddp_runs_every_hook_and_ranks_agree(probe_registered, dataset, tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for k in r0["state"]:  # weights and hook buffers (train_mean, offset, epochs_seen) identical
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["reports"] == r1["reports"]  # calibration and metrics agree across ranks
    assert int(r0["state"]["epochs_seen"]) == 2
    assert r1["checkpoint"] is None  # rank 0 writes it
    loaded, _ = load_checkpoint(r0["checkpoint"])
    assert float(loaded.offset) in OFFSETS
    assert torch.equal(_predictions(loaded, dataset), r0["pred"])
    assert torch.equal(r0["pred"], r1["pred"])
