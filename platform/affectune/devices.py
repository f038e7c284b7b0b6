"""Which torch device a training process uses, from the placement that launched it.

The rule, in order (`pick_device` applies it to a `Placement`; `current_placement` reads one from
this process):

1. `"cpu"` is the CPU.
2. A Ray worker process (Ray Train worker, Tune trial, Ray task) uses what Ray reserved for it:
   - no GPU reserved: the CPU for `"auto"`, an error for `"cuda"`. Ray 2.60 no longer hides the
     node's GPUs from a worker that reserved none (it skips CUDA_VISIBLE_DEVICES when the worker
     holds zero GPUs, ray/_private/utils.py:290-293, ray/_private/accelerators/accelerator.py:4-13),
     so `torch.cuda.is_available()` is True for a CPU trial on a g5 node and must not decide.
   - GPUs reserved, in a Ray Train worker: `ray.train.torch.get_device()`. Ray Train makes every
     worker on a node see the union of the node's reserved GPUs (CUDA_VISIBLE_DEVICES shared,
     ray/train/v2/_internal/callbacks/accelerators.py:55-77, 146-160) and numbers LOCAL_RANK by
     lowest GPU id (ray/train/v2/_internal/execution/worker_group/
     worker_group.py:1079, 1095-1106, 1140-1161), so `cuda:LOCAL_RANK` is wrong: with fractional
     GPUs the workers share one id and LOCAL_RANK 1 is out of range; with 2 GPUs per worker,
     worker 1 (LOCAL_RANK 1) would take worker 0's second GPU. get_device() maps the first id Ray
     assigned to its index in CUDA_VISIBLE_DEVICES (ray/air/_internal/device_manager/
     nvidia_gpu.py:29-60).
   - GPUs reserved, any other Ray worker: Ray sets CUDA_VISIBLE_DEVICES to exactly its ids, and
     the same mapping applies (index of the first assigned id).
3. Under torchrun or plain torch.distributed (no Ray): `cuda:LOCAL_RANK` (torchrun gives each
   local process its own rank and all the node's GPUs).
4. A plain process: `cuda:0` when CUDA is available, else the CPU for `"auto"`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Placement:
    """What decides the device, as seen from inside one process."""

    cuda_available: bool
    """torch.cuda.is_available() in this process."""
    ray_gpu_ids: tuple[str, ...] | None = None
    """GPU ids Ray reserved for this worker (ray.get_gpu_ids()); None when not a Ray worker."""
    cuda_visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as Ray (or the user) set it; None when unset."""
    train_device: torch.device | None = None
    """ray.train.torch.get_device() when this is a Ray Train worker holding GPUs, else None."""
    local_rank: int | None = None
    """LOCAL_RANK from torchrun / torch.distributed when not a Ray worker, else None."""


def pick_device(requested: str, placement: Placement) -> torch.device:
    """The torch device for `requested` ("auto", "cpu" or "cuda") under `placement` (rule: module doc)."""
    if requested not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if placement.ray_gpu_ids is not None:  # a Ray worker: its reservation decides
        if not placement.ray_gpu_ids:
            if requested == "cuda":
                raise RuntimeError("device 'cuda' requested, but this Ray worker reserved no GPU: "
                                   "set gpus_per_worker (--gpus-per-worker) > 0, or use device 'auto'")
            return torch.device("cpu")
        if not placement.cuda_available:
            raise RuntimeError(f"Ray reserved GPU(s) {list(placement.ray_gpu_ids)} for this worker but "
                               "torch.cuda.is_available() is False: is a CPU-only torch installed on this node?")
        if placement.train_device is not None:
            return placement.train_device
        return torch.device("cuda", _visible_index(placement.ray_gpu_ids[0], placement.cuda_visible_devices))
    if not placement.cuda_available:
        if requested == "cuda":
            raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
        return torch.device("cpu")
    return torch.device("cuda", placement.local_rank or 0)


def _visible_index(gpu_id: str, cuda_visible_devices: str | None) -> int:
    """Index of Ray's GPU id among the visible devices (what torch calls cuda:<index>)."""
    if not cuda_visible_devices:
        return int(gpu_id)  # nothing hides devices: torch numbers them as the driver does
    visible = cuda_visible_devices.split(",")
    if gpu_id not in visible:
        raise RuntimeError(f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} does not include GPU {gpu_id} "
                           "that Ray reserved for this worker (was CUDA_VISIBLE_DEVICES overridden?)")
    return visible.index(gpu_id)


def current_placement() -> Placement:
    """This process's placement: Ray's reservation when it is a Ray worker, else LOCAL_RANK."""
    cuda_available = torch.cuda.is_available()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if _in_ray_worker():
        import ray

        gpu_ids = tuple(str(i) for i in ray.get_gpu_ids())
        return Placement(cuda_available, gpu_ids, visible,
                         train_device=_ray_train_device() if gpu_ids and cuda_available else None)
    local_rank = os.environ.get("LOCAL_RANK")
    return Placement(cuda_available, None, visible, local_rank=int(local_rank) if local_rank else None)


def _in_ray_worker() -> bool:
    """True in a Ray worker process (not the driver); never imports Ray into a process without it."""
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def _ray_train_device() -> torch.device | None:
    """ray.train.torch.get_device() in a Ray Train worker; None in other Ray workers (it raises there)."""
    from ray.train.torch import get_device

    try:
        return get_device()
    except RuntimeError:  # "cannot be used outside of a Ray Train training function"
        return None


def resolve(requested: str) -> torch.device:
    """The device this process should train on (see the module docstring)."""
    return pick_device(requested, current_placement())


def describe(device: torch.device) -> dict:
    """{"device": "cuda:0", "device_name": "NVIDIA A10G"} for a run's lineage ("cpu" / processor name)."""
    if device.type == "cuda":
        return {"device": str(device), "device_name": torch.cuda.get_device_name(device)}
    import platform

    return {"device": str(device), "device_name": platform.processor() or platform.machine()}


def cap_gpu_memory(device: torch.device, fraction: float) -> bool:
    """Limit this process's CUDA caching allocator to `fraction` of `device`'s memory, so trials
    that share a GPU (fractional gpus_per_worker) fail alone with an out-of-memory error instead of
    starving each other. No-op (False) on the CPU or for whole GPUs."""
    if device.type != "cuda" or not 0 < fraction < 1:
        return False
    torch.cuda.set_per_process_memory_fraction(float(fraction), device)
    return True
