"""Fractional `--gpus-per-worker` from the command line to the process that trains: the study
requests the fraction from Ray, Ray packs several such trials onto one GPU (a local node declaring
one logical GPU stands in for it), each packed process picks that GPU as its device, and caps its
CUDA allocator to its fraction. The CUDA calls themselves are recorded, not run (CPU torch here)."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

from affectune import devices  # noqa: E402
from affectune.studies import cli  # noqa: E402
from affectune.studies.runner import _with_resources  # noqa: E402
from ray_start import start_ray  # noqa: E402

pytestmark = pytest.mark.cluster  # tests/shards.py runs these beside the rest


def test_cli_fraction_reaches_the_spec_and_the_trial_resources(tmp_path):
    args = cli.build_parser("dqf", "d", {}).parse_args(
        ["--gpus-per-worker", "0.25", "--concurrent", "4", "--storage", str(tmp_path)])
    spec = cli.spec_from_args("dqf", args)
    assert spec.gpus_per_worker == 0.25 and spec.max_concurrent == 4 and spec.workers_per_trial == 1
    assert spec.resolved_execution == "train"  # GPU trials run their worker under Ray Train
    in_process = replace(spec, execution="in_process")
    requested = _with_resources(in_process, "in_process", lambda config: None)._resources  # a PlacementGroupFactory
    assert requested.required_resources == {"CPU": 1.0, "GPU": 0.25}


def test_memory_cap_is_the_reserved_fraction(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    assert devices.cap_gpu_memory(torch.device("cuda", 0), 0.25) is True
    assert calls == [(0.25, torch.device("cuda", 0))]


def test_ray_packs_four_quarter_gpu_trials_on_one_gpu(tmp_path):
    if ray.is_initialized():  # a driver connection left by an earlier module: this test needs its own Ray
        ray.shutdown()

    def packed_trial(rank: int, barrier: str) -> dict:
        """What one packed process sees; it waits until all four run at once (defined here: Ray
        pickles it by value). Were the four not co-scheduled, the first would wait alone and time out."""
        from affectune import devices

        placement = devices.current_placement()
        chosen = devices.pick_device("auto", replace(placement, cuda_available=True))  # CPU torch: pretend CUDA
        open(os.path.join(barrier, str(rank)), "w").close()
        deadline = time.time() + 90
        while len(os.listdir(barrier)) < 4 and time.time() < deadline:
            time.sleep(0.1)
        return {"ids": list(placement.ray_gpu_ids), "cvd": placement.cuda_visible_devices, "device": str(chosen),
                "together": len(os.listdir(barrier)) == 4}

    start_ray(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=0.25, num_gpus=0.25)(packed_trial)
        seen = ray.get([task.remote(rank, str(tmp_path)) for rank in range(4)], timeout=300)
    finally:
        ray.shutdown()
    assert [s["ids"] for s in seen] == [["0"]] * 4
    assert [s["cvd"] for s in seen] == ["0"] * 4
    assert [s["device"] for s in seen] == ["cuda:0"] * 4
    assert all(s["together"] for s in seen)  # all four held a quarter of GPU 0 at the same time
