"""Device choice under the placements Ray Train and Ray create, built with Ray's own code.

No GPU is reachable here, so each case builds what a worker process would see on a GPU node:
CUDA_VISIBLE_DEVICES from Ray Train's sharing rule (`_get_visible_accelerator_ids_per_worker`,
ray/train/v2/_internal/callbacks/accelerators.py:123-160), the device `ray.train.torch.get_device()`
returns from Ray's CUDA device manager (ray/air/_internal/device_manager/nvidia_gpu.py:16-60,
with `ray.get_gpu_ids()` faked to the worker's reservation), LOCAL_RANK as Ray Train numbers it
(lowest GPU id first per node), and CUDA reported available. The last test runs a real
TorchTrainer on a local Ray that declares fake GPUs, so Ray itself sets the environment
(tests/fake_gpus.py, in the background: see tests/background.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import ray
import torch
from ray.air._internal.device_manager.nvidia_gpu import CUDATorchDeviceManager
from ray.train.v2._internal.callbacks.accelerators import _get_visible_accelerator_ids_per_worker
from ray.train.v2._internal.execution.worker_group.worker import ActorMetadata

import background
from affectune.devices import Placement, cap_gpu_memory, current_placement, describe, pick_device

pytestmark = pytest.mark.cluster  # tests/shards.py runs these beside the rest

def _ray_train_workers(monkeypatch, reservations: list[tuple[str, list[str]]]) -> list[dict]:
    """Per worker (node, Ray's GPU ids): the CUDA_VISIBLE_DEVICES, get_device() and LOCAL_RANK Ray Train gives it."""
    metas = [ActorMetadata(hostname=node, node_id=node, node_ip=node, pid=i, accelerator_ids={"GPU": ids})
             for i, (node, ids) in enumerate(reservations)]
    visible = _get_visible_accelerator_ids_per_worker(metas, "GPU")
    workers = []
    for index, ((node, ids), cvd) in enumerate(zip(reservations, visible)):
        monkeypatch.setattr(ray, "get_gpu_ids", lambda ids=ids: ids)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
        ray_device = CUDATorchDeviceManager().get_devices()[0]  # what get_device() returns in this worker
        # LOCAL_RANK: position among the node's workers sorted (stably) by lowest GPU id.
        peers = sorted((j for j, (n, _) in enumerate(reservations) if n == node),
                       key=lambda j: min(int(i) for i in reservations[j][1]))
        workers.append({"ids": ids, "cvd": cvd, "ray_device": ray_device, "local_rank": peers.index(index)})
    return workers


def _pick(worker: dict, requested: str = "auto") -> torch.device:
    return pick_device(requested, Placement(cuda_available=True, ray_gpu_ids=tuple(worker["ids"]),
                                            cuda_visible_devices=worker["cvd"],
                                            train_device=worker["ray_device"]))


def test_one_worker_one_gpu_uses_its_gpu(monkeypatch):
    (worker,) = _ray_train_workers(monkeypatch, [("n1", ["0"])])
    assert worker["cvd"] == "0"
    assert _pick(worker) == _pick(worker, "cuda") == torch.device("cuda", 0)


def test_two_workers_with_two_gpus_each_get_disjoint_gpus(monkeypatch):
    # g5.12xlarge: 4 GPUs, worker 0 holds 0,1 and worker 1 holds 2,3; Ray Train shares "0,1,2,3".
    workers = _ray_train_workers(monkeypatch, [("n1", ["0", "1"]), ("n1", ["2", "3"])])
    assert [w["cvd"] for w in workers] == ["0,1,2,3", "0,1,2,3"]
    assert [_pick(w) for w in workers] == [torch.device("cuda", 0), torch.device("cuda", 2)]
    # The old rule cuda:LOCAL_RANK put worker 1 on worker 0's second GPU.
    assert [w["local_rank"] for w in workers] == [0, 1]


def test_workers_on_two_nodes_with_non_contiguous_ids(monkeypatch):
    workers = _ray_train_workers(monkeypatch, [("n1", ["3"]), ("n2", ["0"]), ("n1", ["1"])])
    assert [w["cvd"] for w in workers] == ["1,3", "0", "1,3"]
    assert [_pick(w) for w in workers] == [torch.device("cuda", 1), torch.device("cuda", 0), torch.device("cuda", 0)]


def test_fractional_gpus_share_one_device_instead_of_an_out_of_range_index(monkeypatch):
    # Two workers with 0.5 GPU each packed on a g5.xlarge: both hold GPU 0, one device visible.
    workers = _ray_train_workers(monkeypatch, [("n1", ["0"]), ("n1", ["0"])])
    assert [w["cvd"] for w in workers] == ["0", "0"]
    assert [_pick(w) for w in workers] == [torch.device("cuda", 0)] * 2
    # cuda:LOCAL_RANK gave worker 1 cuda:1 with a single visible device (StudySpec refuses this
    # combination anyway, because NCCL refuses two ranks on one GPU).
    assert workers[1]["local_rank"] == 1 and len(workers[1]["cvd"].split(",")) == 1


def test_cpu_workers_on_a_gpu_node_stay_on_the_cpu(monkeypatch):
    # Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for a worker holding zero GPUs (checked with
    # Ray's own function below), so torch sees the node's GPUs; the reservation must decide.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")

    class _Context:
        @staticmethod
        def get_accelerator_ids():
            return {"GPU": [], "TPU": []}

    monkeypatch.setattr(ray, "get_runtime_context", lambda: _Context())
    from ray._private.utils import set_visible_accelerator_ids

    set_visible_accelerator_ids()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # not hidden

    for local_rank in (0, 1):  # a 2-worker CPU trial: the old rule asked for cuda:1
        placement = Placement(cuda_available=True, ray_gpu_ids=(), cuda_visible_devices="0,1,2,3",
                              local_rank=local_rank)
        assert pick_device("auto", placement) == torch.device("cpu")
        assert pick_device("cpu", placement) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="reserved no GPU.*gpus_per_worker"):
            pick_device("cuda", placement)


def test_other_ray_workers_map_their_gpu_through_cuda_visible_devices():
    # A Ray task or an in-process Tune trial: Ray sets CUDA_VISIBLE_DEVICES to exactly its ids.
    placement = Placement(cuda_available=True, ray_gpu_ids=("2",), cuda_visible_devices="2")
    assert pick_device("auto", placement) == torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match="does not include GPU 2"):
        pick_device("auto", replace(placement, cuda_visible_devices="0,1"))
    with pytest.raises(RuntimeError, match="CPU-only torch"):
        pick_device("auto", replace(placement, cuda_available=False))


def test_torchrun_and_plain_processes_use_local_rank():
    assert pick_device("auto", Placement(cuda_available=True, local_rank=3)) == torch.device("cuda", 3)
    assert pick_device("cuda", Placement(cuda_available=True)) == torch.device("cuda", 0)
    assert pick_device("auto", Placement(cuda_available=False, local_rank=3)) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="is_available"):
        pick_device("cuda", Placement(cuda_available=False))
    with pytest.raises(ValueError, match="device must be one of"):
        pick_device("gpu", Placement(cuda_available=True))


def test_current_placement_outside_ray_reads_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    if ray.is_initialized():
        pytest.skip("a Ray driver in this process; the outside-Ray case needs none")
    placement = current_placement()
    assert placement.ray_gpu_ids is None and placement.local_rank == 2
    assert placement.cuda_available == torch.cuda.is_available()


def test_describe_and_memory_cap_on_cpu():
    info = describe(torch.device("cpu"))
    assert info["device"] == "cpu" and isinstance(info["device_name"], str) and info["device_name"]
    assert cap_gpu_memory(torch.device("cpu"), 0.5) is False
    assert cap_gpu_memory(torch.device("cuda", 0), 1.0) is False  # a whole GPU is not capped


def test_real_torch_trainer_on_fake_gpus(request):
    """Ray (a local node declaring 4 GPUs) assigns 2 workers x 2 GPUs and sets their environment
    (tests/fake_gpus.py, run in the background while the rest of the suite runs)."""
    code, out = background.job(request, "fake-gpus", background.script("fake_gpus"), timeout_s=600)
    assert code == 0, (out / "job.log").read_text(errors="replace")[-4000:]
    seen = [json.loads((out / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [sorted(s["ids"]) for s in seen] == [["0", "1"], ["2", "3"]]
    assert [s["cvd"] for s in seen] == ["0,1,2,3", "0,1,2,3"]
    assert [s["local_rank"] for s in seen] == [0, 1]
    assert [s["device"] for s in seen] == ["cuda:0", "cuda:2"]  # cuda:LOCAL_RANK would give cuda:1
