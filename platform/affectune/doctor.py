"""`python -m affectune doctor` (`make gpu-check`): does this machine or cluster work with affectune?

    python -m affectune doctor                  # this machine (starts a local Ray)
    python -m affectune doctor --address auto   # on the head of a cluster (after `ray up`): the
                                                # model checks run as a 1-GPU Ray task on a GPU node

1. Lists what torch and Ray see: torch build (CUDA version or CPU), GPUs and their memory, NCCL,
   and the cluster's CPU/GPU resources and nodes.
2. Diagnoses the usual first-use failures with a message saying what to do: a CPU build of torch
   on a machine with an NVIDIA driver, a CUDA build that cannot reach the driver, several GPUs
   without NCCL, a Ray cluster with GPUs that torch cannot see.
3. Trains every registered model for one epoch on a small synthetic set on the device (bf16 on a
   GPU), runs the robustness grid on it, and prints samples/s per model and peak GPU memory.
   On a machine without a GPU it says so and runs the same check on the CPU (fp32).
Exit status 0 when every check passed, 1 otherwise (each failure printed as "FAIL: ...").
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field

CHECK_SOURCE = "synthetic:mosi?scale=0.05"
"""A small MOSI-shaped set: one epoch of every model takes seconds."""


@dataclass
class Report:
    """What the doctor found: lines to print, and failures (each with what to do)."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    echo: bool = True
    """Print as it goes (off inside a Ray task: the driver prints the returned report)."""

    def info(self, text: str) -> None:
        self.lines.append(text)
        if self.echo:
            print(text, flush=True)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self.lines.append(f"FAIL: {text}")
        if self.echo:
            print(f"FAIL: {text}", flush=True)


def check_torch(report: Report) -> bool:
    """torch's build and the GPUs it sees; True if a usable GPU is there."""
    import torch
    import torch.distributed as dist

    cuda_build = torch.version.cuda
    report.info(f"torch {torch.__version__} ({'CUDA ' + cuda_build if cuda_build else 'CPU-only build'})")
    driver = shutil.which("nvidia-smi") is not None
    if not cuda_build:
        if driver:
            report.fail("an NVIDIA driver is installed (nvidia-smi found) but torch is a CPU-only build: install a "
                        "CUDA build of torch matching the driver (see docs/cluster.md)")
        else:
            report.info("no GPU: this machine has no NVIDIA driver and torch is a CPU build; checking the CPU path")
        return False
    if not torch.cuda.is_available():
        reason = _cuda_init_error()
        report.fail(f"torch is built for CUDA {cuda_build} but cannot use a GPU ({reason}); check that the NVIDIA "
                    "driver supports this CUDA version (nvidia-smi shows the highest it supports)")
        return False
    count = torch.cuda.device_count()
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        report.info(f"  cuda:{i} {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                    f"compute capability {props.major}.{props.minor}")
    nccl = dist.is_available() and dist.is_nccl_available()
    report.info(f"NCCL {'available' if nccl else 'NOT available'}")
    if count > 1 and not nccl:
        report.fail(f"{count} GPUs but torch has no NCCL: multi-GPU data parallel training cannot run; "
                    "install a torch build with NCCL")
    return True


def _cuda_init_error() -> str:
    import torch

    try:
        torch.cuda.init()
    except Exception as e:  # noqa: BLE001 - the message is what the user needs
        return str(e).splitlines()[0]
    return "torch.cuda.is_available() is False"


def check_ray(report: Report, address: str | None, torch_gpu: bool) -> None:
    """The resources and nodes Ray sees (connects to `address`, or starts a small local Ray)."""
    import ray

    from affectune.studies.runner import init_ray

    started_here = not ray.is_initialized()
    init_ray(address, **({} if address else {"num_cpus": 1, "include_dashboard": False}))
    try:
        total = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        report.info(f"Ray {ray.__version__}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, "
                    f"{total.get('GPU', 0):g} GPUs")
        if total.get("GPU", 0) and not torch_gpu and address:
            report.info("  (the cluster has GPUs; this process has none: studies run on the GPU nodes)")
        if total.get("GPU", 0) and not torch_gpu and not address:
            report.fail("Ray sees GPUs on this machine but torch cannot use them (see the torch lines above)")
    finally:
        if started_here:
            ray.shutdown()


def check_models(report: Report, device: str, models: list[str]) -> None:
    """One epoch of each model (its study defaults) on `device` (bf16 on a GPU), then the robustness
    grid: the whole grid on a GPU, its {t,a,v} subset at rates 0 and 0.5 on a CPU (minutes saved)."""
    import torch

    from affectune.data import load
    from affectune.evaluate import robustness
    from affectune.missing import FULL_SET, RATES, SUBSETS
    from affectune.models import model_class
    from affectune.train import load_checkpoint, train_loop

    dataset = load(CHECK_SOURCE)
    n_train = len(dataset.splits["train"].ids)
    gpu = device == "cuda"
    precision = "bf16" if gpu else "fp32"
    grid = {"subsets": SUBSETS, "rates": RATES} if gpu else {"subsets": (FULL_SET,), "rates": (0.0, 0.5)}
    report.info(f"training each model for 1 epoch on {device} ({precision}, {CHECK_SOURCE}, {n_train} samples), "
                f"then the {'full' if gpu else 'reduced'} robustness grid:")
    for name in models:
        try:
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            config = {**model_class(name).study_defaults, "model": name, "dataset": CHECK_SOURCE, "epochs": 1,
                      "batch_size": 16, "device": device, "precision": precision, "patience": None}
            out = train_loop(config, dataset=dataset)
            model, _ = load_checkpoint(out.checkpoint_path, device=device)
            started = time.perf_counter()
            robustness(model, dataset, "test", seeds=(0,), include_inter=gpu, **grid)
            grid_s = time.perf_counter() - started
            rate = n_train / out.history[0]["train_time_s"]
            memory = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
                      if device == "cuda" else "")
            report.info(f"  {name:<12} ok: {rate:8.1f} samples/s, grid {grid_s:5.1f} s{memory}")
        except Exception as e:  # noqa: BLE001 - report every model, then fail at the end
            report.fail(f"model {name!r} on {device}: {type(e).__name__}: {e}")


def check_node(models: list[str]) -> Report:
    """torch and the models on the machine this runs on (quiet: a Ray task returns it)."""
    report = Report(echo=False)
    gpu = check_torch(report)
    check_models(report, "cuda" if gpu else "cpu", models)
    return report


def check_on_gpu_node(report: Report, models: list[str], timeout_s: float) -> None:
    """Run `check_node` as a Ray task holding one GPU (the autoscaler starts a GPU node for it)."""
    import ray

    report.info(f"checking a GPU node (a Ray task with 1 GPU; waits up to {timeout_s:.0f} s for the autoscaler):")
    ref = ray.remote(num_gpus=1, num_cpus=1)(check_node).remote(models)
    try:
        remote = ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        report.fail(f"no GPU node ran the check within {timeout_s:.0f} s: see `ray status` and the autoscaler "
                    "log (`ray exec cluster.yaml 'tail -n 100 /tmp/ray/session_latest/logs/monitor.*'`)")
        return
    for line in remote.lines:
        report.info("  " + line)
    report.failures.extend(remote.failures)


def run_doctor(address: str | None = None, models: list[str] | None = None, skip_ray: bool = False,
               gpu_node_timeout_s: float = 1200.0) -> Report:
    """Every check; with a cluster `address`, the model checks run on a GPU node of the cluster."""
    import ray

    from affectune.models import list_models
    from affectune.studies.runner import init_ray

    models = models or list_models()
    report = Report()
    gpu = check_torch(report)
    if skip_ray:
        check_models(report, "cuda" if gpu else "cpu", models)
    elif address:  # on the head: check the cluster, then a GPU node, where studies train
        init_ray(address)
        check_ray(report, address, gpu)
        check_on_gpu_node(report, models, gpu_node_timeout_s)
    else:
        try:
            check_ray(report, None, gpu)
        except Exception as e:  # noqa: BLE001
            report.fail(f"Ray: {type(e).__name__}: {e}")
        check_models(report, "cuda" if gpu else "cpu", models)
    if ray.is_initialized() and address:
        ray.shutdown()
    report.info("all checks passed" if not report.failures else f"{len(report.failures)} check(s) failed")
    return report


def add_doctor_command(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check that torch, Ray and the GPUs work with affectune",
                              description=__doc__.splitlines()[0])
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default: a local Ray")
    p.add_argument("--models", default=None, help="comma-separated models to check (default: all registered)")
    p.add_argument("--skip-ray", action="store_true", help="check torch and the models only")
    p.add_argument("--gpu-node-timeout", type=float, default=1200.0,
                   help="with --address: seconds to wait for a GPU node to run the model checks")
    p.set_defaults(func=lambda args: 1 if run_doctor(
        args.address, args.models.split(",") if args.models else None, args.skip_ray,
        args.gpu_node_timeout).failures else 0)


if __name__ == "__main__":
    sys.exit(0 if not run_doctor().failures else 1)
