"""Mid-run resume of the training loop: a run interrupted after epoch k and continued from its
`latest.pt` computes exactly what the uninterrupted run computes (weights, optimiser, scaler,
best-so-far, patience counter, the model's hook buffers, per-epoch RNG streams)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from affectune.data import load
from affectune.train import CHECKPOINT_FILE, RESUME_FILE, TrainingStopped, train_loop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hooks import register_probe  # noqa: E402

SOURCE = "synthetic:mosi?scale=0.05"
BASE = {"model": "late_fusion", "model_config": {"hidden": 16, "dropout": 0.3}, "dataset": SOURCE,
        "epochs": 4, "batch_size": 16, "num_threads": 1, "patience": None, "seed": 3}
TIMING = ("epoch_time_s", "epoch_cpu_s", "train_time_s", "train_cpu_s")


class Killed(Exception):
    """Stands for the process dying right after an epoch's report."""


@pytest.fixture(scope="module")
def dataset():
    return load(SOURCE)


def _deterministic(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _interrupted(dataset, config: dict, ckpt: Path, after: int) -> None:
    def reporter(metrics, saved):
        if metrics["epoch"] == after:
            raise Killed
    with pytest.raises(Killed):
        train_loop({**config, "checkpoint_dir": str(ckpt)}, reporter, dataset=dataset)


@pytest.mark.parametrize("model, changes", [("late_fusion", {}), ("hook_probe", {"model_config": {}})])
def test_resumed_run_matches_the_uninterrupted_run(dataset, tmp_path, model, changes):
    register_probe()
    config = {**BASE, "model": model, **changes}
    full = train_loop({**config, "checkpoint_dir": str(tmp_path / "full")}, dataset=dataset)

    _interrupted(dataset, config, tmp_path / "cut", after=2)
    reported = []
    resumed = train_loop({**config, "checkpoint_dir": str(tmp_path / "cut")},
                         lambda m, s: reported.append(m["epoch"]), dataset=dataset,
                         resume_from=tmp_path / "cut")
    assert reported == [3, 4]  # only the epochs not yet run: none repeated, none skipped
    assert _deterministic(resumed.history) == _deterministic(full.history)
    assert (resumed.best_epoch, resumed.best_objective) == (full.best_epoch, full.best_objective)
    a = torch.load(tmp_path / "full" / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if model == "hook_probe":  # a buffer on_epoch_end counts up (after the epoch's best.pt): 4, not 2
        latest = torch.load(tmp_path / "cut" / RESUME_FILE, weights_only=True)["state_dict"]
        assert int(latest["epochs_seen"]) == 4


def test_resume_state_holds_what_a_restart_needs(dataset, tmp_path):
    _interrupted(dataset, {**BASE, "patience": 3}, tmp_path / "c", after=3)
    state = torch.load(tmp_path / "c" / RESUME_FILE, weights_only=True)
    assert state["epoch"] == 3 and [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert state["optimizer"]["state"] and state["scaler"] is not None
    best = min(h["objective"] for h in state["history"])
    sel = state["selection"]
    assert sel["best"] == best and sel["best_metrics"]["objective"] == best
    assert sel["since_best"] == 3 - sel["best_epoch"]  # the early-stopping counter travels too


def test_resume_refuses_another_config_and_stops_a_finished_run(dataset, tmp_path):
    _interrupted(dataset, BASE, tmp_path / "c", after=2)
    with pytest.raises(ValueError, match=r"different config \(\['lr'\]\)"):
        train_loop({**BASE, "lr": 0.5, "checkpoint_dir": str(tmp_path / "c")}, dataset=dataset,
                   resume_from=tmp_path / "c")
    full = train_loop({**BASE, "checkpoint_dir": str(tmp_path / "f")}, dataset=dataset)
    calls = []
    again = train_loop({**BASE, "checkpoint_dir": str(tmp_path / "f")}, lambda m, s: calls.append(m),
                       dataset=dataset, resume_from=tmp_path / "f")
    assert calls == [] and _deterministic(again.history) == _deterministic(full.history)


def test_should_stop_ends_the_loop_between_batches_and_keeps_the_last_epoch(dataset, tmp_path):
    """A stop asked for mid-epoch (Tune stopping an in-process trial) ends the loop before the next
    batch: no further batch, no report of the cut epoch, and latest.pt still holds the last whole
    epoch, so a restart resumes from it."""
    checks, per_epoch = [], []

    def reporter(metrics, saved):
        per_epoch.append(len(checks))  # checks made up to the end of this epoch

    def should_stop():
        checks.append(1)
        return bool(per_epoch) and len(checks) == per_epoch[0] + 3  # before epoch 2's third batch

    with pytest.raises(TrainingStopped, match="during epoch 2"):
        train_loop({**BASE, "checkpoint_dir": str(tmp_path)}, reporter, dataset=dataset, should_stop=should_stop)
    assert per_epoch[0] >= 3 and len(per_epoch) == 1  # one check per batch of epoch 1; epoch 2 never reported
    assert len(checks) == per_epoch[0] + 3  # nothing was checked (or trained) after the stop
    assert torch.load(tmp_path / RESUME_FILE, weights_only=True)["epoch"] == 1
