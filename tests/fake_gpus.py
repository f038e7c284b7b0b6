"""A real TorchTrainer on a local Ray that declares 4 fake GPUs: 2 workers x 2 GPUs; each worker
writes what it sees (the environment Ray set, the device affectune picks) to OUT/<rank>.json.

    python tests/fake_gpus.py OUT

Run in the background by tests/test_devices.py (see tests/background.py).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace


def report_placement(config: dict) -> None:
    """Ray Train worker: write what this process sees (the environment Ray set) to a file."""
    import ray.train

    from affectune.devices import current_placement, pick_device

    placement = current_placement()
    rank = ray.train.get_context().get_world_rank()
    chosen = pick_device("auto", replace(placement, cuda_available=True))  # CPU torch here: pretend CUDA
    with open(os.path.join(config["out"], f"{rank}.json"), "w") as handle:
        json.dump({"ids": list(placement.ray_gpu_ids or ()), "cvd": placement.cuda_visible_devices,
                   "local_rank": int(os.environ["LOCAL_RANK"]), "device": str(chosen)}, handle)


def main(out: str) -> None:
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    try:
        TorchTrainer(report_placement, train_loop_config={"out": out},
                     torch_config=TorchConfig(backend="gloo"),  # CPU torch: no NCCL here
                     scaling_config=ScalingConfig(num_workers=2, use_gpu=True,
                                                  resources_per_worker={"CPU": 0.5, "GPU": 2}),
                     run_config=RunConfig(storage_path=os.path.join(out, "runs"), name="fake-gpus")).fit()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
