"""`python -m affectune doctor` (`make gpu-check`): on this CPU machine it says there is no GPU,
checks Ray and the models on the CPU and exits 0; the first-use GPU failures get clear messages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from affectune import doctor
from ray_start import start_ray

# Not marked `cluster` though it starts Ray: tests/shards.py balances its two shards by time.


@pytest.fixture(scope="module", autouse=True)
def doctor_cli():
    """`python -m affectune doctor --models late_fusion`, started when the module starts so that it
    runs while the other tests of the module do (its check asserts on it last)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "affectune", "doctor", "--models", "late_fusion"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_cpu_torch_on_a_machine_with_an_nvidia_driver_fails_with_what_to_do(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(torch.version, "cuda", None)
    report = doctor.Report()
    assert doctor.check_torch(report) is False
    assert len(report.failures) == 1 and "CPU-only build" in report.failures[0]
    assert "install a CUDA build of torch" in report.failures[0]


def test_cuda_build_that_cannot_reach_the_driver_fails_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(doctor, "_cuda_init_error", lambda: "driver too old (found version 11040)")
    report = doctor.Report()
    assert doctor.check_torch(report) is False
    assert "CUDA 12.8" in report.failures[0] and "driver too old" in report.failures[0]


def test_several_gpus_without_nccl_fail(monkeypatch):
    class Props:
        name, total_memory, major, minor = "NVIDIA A10G", 24 * 2**30, 8, 6

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    report = doctor.Report()
    assert doctor.check_torch(report) is True
    assert any("cuda:3 NVIDIA A10G, 24.0 GiB" in line for line in report.lines)
    assert report.failures == ["4 GPUs but torch has no NCCL: multi-GPU data parallel training cannot run; "
                               "install a torch build with NCCL"]


def test_a_failing_model_is_reported_and_the_others_still_checked(monkeypatch):
    import affectune.train as train

    original = train.train_loop

    def broken(config, *args, **kwargs):
        if config["model"] == "mult":
            raise RuntimeError("CUDA error: no kernel image is available")
        return original(config, *args, **kwargs)

    monkeypatch.setattr(train, "train_loop", broken)
    report = doctor.Report()
    doctor.check_models(report, "cpu", ["mult", "late_fusion"])
    assert report.failures == ["model 'mult' on cpu: RuntimeError: CUDA error: no kernel image is available"]
    assert any(line.startswith("  late_fusion  ok:") for line in report.lines)


def test_on_a_cluster_the_model_checks_run_in_a_one_gpu_ray_task():
    """`--address`: the head has no GPU, so the model checks run as a 1-GPU task on a GPU node.
    Here a local Ray declares one (fake) GPU; the task runs and its report comes back; with no GPU
    to be had, the wait ends with a message naming where to look."""
    import ray

    start_ray(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        report = doctor.Report(echo=False)
        doctor.check_on_gpu_node(report, ["late_fusion"], timeout_s=300)
        assert report.failures == []
        assert any(line.strip().startswith("late_fusion  ok:") for line in report.lines)
        starved = doctor.Report(echo=False)
        blocker = ray.remote(num_gpus=1)(lambda: __import__("time").sleep(60)).remote()  # holds the GPU
        doctor.check_on_gpu_node(starved, ["late_fusion"], timeout_s=3)
        assert len(starved.failures) == 1 and "no GPU node ran the check within 3 s" in starved.failures[0]
        ray.cancel(blocker, force=True)
    finally:
        ray.shutdown()


def test_cpu_machine_reports_no_gpu_checks_the_rest_and_exits_zero(doctor_cli):
    out, err = doctor_cli.communicate(timeout=300)
    assert doctor_cli.returncode == 0, out + err
    assert "no GPU" in out and "CPU-only build" in out
    assert "Ray " in out and "node(s)" in out
    assert "late_fusion  ok:" in out and "samples/s" in out
    assert out.rstrip().endswith("all checks passed")
