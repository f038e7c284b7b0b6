"""The training loop: reporting, checkpoints, selection, early stopping, determinism, no test access, DDP."""

from __future__ import annotations

import copy
import math
import os
import socket

import numpy as np
import pytest
import torch

from affectune.data import Dataset, load
from affectune.loader import EpochBatches, preload
from affectune.metrics import compute_metrics
from affectune.train import (
    CHECKPOINT_FILE, TrainConfig, load_checkpoint, masked_validation, predict_split, read_checkpoint, train_loop,
)

SOURCE = "synthetic:mosi?scale=0.05"
BASE = {"model": "late_fusion", "model_config": {"hidden": 16}, "dataset": SOURCE, "epochs": 2,
        "batch_size": 16, "num_threads": 1, "patience": None}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load(SOURCE)


def run(dataset, tmp_path, reporter=None, **changes):
    cfg = {**BASE, "checkpoint_dir": str(tmp_path / "ckpt"), **changes}
    return train_loop(cfg, reporter, dataset=dataset)


def test_reporter_called_once_per_epoch_with_documented_keys(dataset, tmp_path):
    calls = []
    out = run(dataset, tmp_path, reporter=lambda m, c: calls.append((m, c)), epochs=3)
    assert [m["epoch"] for m, _ in calls] == [1, 2, 3]
    for metrics, ckpt in calls:
        for key in ("epoch", "train_loss", "val_mae", "val_non0_acc2", "valmask_mae", "valmask_acc7",
                    "objective", "best_objective", "best_epoch", "epoch_time_s"):
            assert key in metrics, key
        assert metrics["objective"] == metrics["valmask_mae"]  # default: primary metric on the masked set
        assert all(isinstance(v, (int, float)) for v in metrics.values())
    # A checkpoint directory is reported exactly on the epochs that improved.
    improved = [c is not None for _, c in calls]
    assert improved[0]
    assert improved == [m["best_epoch"] == m["epoch"] for m, _ in calls]
    assert calls[0][1] == str(tmp_path / "ckpt")
    assert out.epochs_run == 3 and len(out.history) == 3


def test_checkpoint_is_the_selected_epoch_and_reloads_with_weights_only(dataset, tmp_path):
    out = run(dataset, tmp_path, epochs=4, lr=3e-3)
    objectives = [h["objective"] for h in out.history]
    assert out.best_epoch == int(np.argmin(objectives)) + 1  # MAE: lower is better, first minimum kept
    assert out.best_objective == min(objectives)
    path = tmp_path / "ckpt" / CHECKPOINT_FILE
    assert out.checkpoint_path == str(path)
    raw = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert raw["epoch"] == out.best_epoch
    assert raw["dataset_fingerprint"] == dataset.fingerprint
    assert raw["config"]["model"] == "late_fusion" and raw["code_version"]
    model, config = load_checkpoint(path)
    assert config == out.config
    # The reloaded weights reproduce the selected epoch's validation numbers exactly.
    valid = preload(dataset, "valid")
    for prefix, data in (("val", valid), ("valmask", masked_validation(valid, TrainConfig.from_dict(config)))):
        pred = predict_split(model, data, 64)[:, 0].numpy()
        mae = compute_metrics("regression", data.label.numpy(), pred)["mae"]
        assert mae == pytest.approx(out.history[out.best_epoch - 1][f"{prefix}_mae"], abs=1e-6)


def test_selection_follows_a_max_metric_when_asked(dataset, tmp_path):
    out = run(dataset, tmp_path, epochs=4, lr=3e-3, select_metric="val_corr")
    values = [h["val_corr"] for h in out.history]
    assert out.select_metric == "val_corr"
    assert out.best_epoch == int(np.argmax(values)) + 1


def test_early_stopping_after_patience_epochs_without_improvement(dataset, tmp_path):
    # lr 1e-30 cannot move float32 weights: every epoch scores the same, so only epoch 1 improves.
    calls = []
    out = run(dataset, tmp_path, reporter=lambda m, c: calls.append(m), epochs=10, lr=1e-30, patience=2)
    assert out.epochs_run == 3 and out.stopped_early
    assert [m["best_epoch"] for m in calls] == [1, 1, 1]
    assert len({m["objective"] for m in calls}) == 1


def test_same_seed_same_run_other_seed_differs(dataset, tmp_path):
    strip = lambda h: [{k: v for k, v in e.items() if not k.endswith(("time_s", "cpu_s"))} for e in h]  # noqa: E731
    a = run(dataset, tmp_path / "a", model="dqf", model_config={"hidden": 16, "layers": 1, "heads": 2})
    b = run(dataset, tmp_path / "b", model="dqf", model_config={"hidden": 16, "layers": 1, "heads": 2})
    c = run(dataset, tmp_path / "c", model="dqf", model_config={"hidden": 16, "layers": 1, "heads": 2}, seed=1)
    assert strip(a.history) == strip(b.history)
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]
    wa, wb = (read_checkpoint(x.checkpoint_path)["state_dict"] for x in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class _NoTestSplits(dict):
    def __getitem__(self, key):
        if key == "test":
            raise AssertionError("the training loop read the test split")
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def values(self):
        raise AssertionError("the training loop iterated over all splits (test included)")

    def items(self):
        raise AssertionError("the training loop iterated over all splits (test included)")


class _GuardedDataset(Dataset):
    """The real dataset whose test split cannot be read; its fingerprint is the original's."""

    @property
    def fingerprint(self) -> str:
        return self._fingerprint


def test_training_never_reads_the_test_split(dataset, tmp_path):
    guarded = copy.copy(dataset)
    guarded.__class__ = _GuardedDataset
    guarded._fingerprint = dataset.fingerprint
    guarded.splits = _NoTestSplits(dataset.splits)
    with pytest.raises(AssertionError):
        guarded.splits["test"]
    out = run(guarded, tmp_path, epochs=1)
    assert out.dataset_fingerprint == dataset.fingerprint


def test_masked_validation_is_fixed_and_model_independent(dataset):
    valid = preload(dataset, "valid")
    cfg_a = TrainConfig.from_dict({**BASE, "model": "dqf"})
    cfg_b = TrainConfig.from_dict({**BASE, "model": "late_fusion", "seed": 7})
    a, b = masked_validation(valid, cfg_a), masked_validation(valid, cfg_b)
    for m in ("text", "audio", "vision"):
        assert torch.equal(a.features[m], b.features[m])
        zeroed = (a.features[m] == 0).all(-1) & valid.valid[m]  # (N, T) frames that became zero
        share = zeroed.sum().item() / valid.valid[m].sum().item()
        assert 0.35 < share < 0.65  # val_mask_rate 0.5 on every modality by default
    other = masked_validation(valid, TrainConfig.from_dict({**BASE, "val_mask_seed": 1}))
    assert not torch.equal(a.features["text"], other.features["text"])


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown train config key.*'epochz'"):
        TrainConfig.from_dict({"model": "late_fusion", "epochz": 3})
    with pytest.raises(ValueError, match="no 'model'"):
        TrainConfig.from_dict({"epochs": 3})  # the platform picks no method for the user
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig("late_fusion", optimizer="rmsprop")
    with pytest.raises(ValueError, match="select_metric"):
        TrainConfig("late_fusion", select_metric="valmask_nope")
    with pytest.raises(ValueError, match="classification metric"):
        TrainConfig("late_fusion", select_metric="wf1").selection("regression")
    assert TrainConfig("late_fusion").selection("regression") == ("valmask_mae", "min")
    assert TrainConfig("late_fusion", select_metric="val_corr").selection("regression") == ("val_corr", "max")
    config = TrainConfig("late_fusion", lr=0.5)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_epoch_batches_shard_disjointly_and_reshuffle(dataset):
    data = preload(dataset, "train")
    n = len(data)
    shards = []
    for rank in range(2):
        eb = EpochBatches(data, 8, seed=3, rank=rank, world_size=2)
        eb.set_epoch(1)
        shards.append(torch.cat([b.index for b in eb]))
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(shards[0].tolist() + shards[1].tolist()) == list(range(n))
    single = EpochBatches(data, 16, seed=3)
    single.set_epoch(1)
    first = torch.cat([b.index for b in single])
    single.set_epoch(2)
    assert sorted(first.tolist()) == list(range(n))
    assert not torch.equal(first, torch.cat([b.index for b in single]))
    batch = next(iter(single))  # trimmed to its longest sample per modality
    Tt, Ta = batch.text.shape[1], batch.audio.shape[1]
    assert torch.equal(batch.text, data.features["text"][batch.index, :Tt])
    assert torch.equal(batch.valid["audio"], torch.arange(Ta)[None]
                       < torch.as_tensor(data.lengths["audio"])[batch.index, None])


# ----------------------------------------------------------------------------- data parallel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    import affectune.models as models

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    built, seen = [], []
    original = models.build_model

    def spy(*args, **kwargs):  # keep the model to compare final weights across ranks
        model = original(*args, **kwargs)
        policy = model.train_policy
        model.train_policy = lambda batch, gen: (seen.append(batch.index.clone()), policy(batch, gen))[1]
        built.append(model)
        return model

    models.build_model = spy
    try:
        reports = []
        cfg = {**BASE, "epochs": 2, "checkpoint_dir": os.path.join(out_dir, "ckpt")}
        out = train_loop(cfg, lambda m, c: reports.append((m, c)))
        per_epoch = len(seen) // 2
        torch.save({"state": built[0].state_dict(), "epoch1": torch.cat(seen[:per_epoch]),
                    "reports": [(m["epoch"], m["valmask_mae"], c) for m, c in reports],
                    "checkpoint": out.checkpoint_path}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        models.build_model = original
        dist.destroy_process_group()


def test_two_process_gloo_ddp_shards_data_and_keeps_weights_identical(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert set(r0["epoch1"].tolist()).isdisjoint(r1["epoch1"].tolist())
    assert len(r0["epoch1"]) == len(r1["epoch1"]) == 32  # 64 training samples split in two
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # Every rank reports every epoch with identical (all-gathered) validation metrics.
    assert [(e, v) for e, v, _ in r0["reports"]] == [(e, v) for e, v, _ in r1["reports"]]
    assert all(math.isfinite(v) for _, v, _ in r0["reports"])
    assert r0["reports"][0][2] is not None and all(c is None for _, _, c in r1["reports"])
    assert r0["checkpoint"] is not None and r1["checkpoint"] is None
