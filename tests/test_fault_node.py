"""Fault injection: the second node of a two-node local cluster dies while a trial trains on it;
the trial is rescheduled on the head, continues from its last epoch and the study loses nothing.

The cluster is started as in tests/test_multinode.py (`ray start --block` in new sessions this
module owns). Both nodes offer one unit of a resource `slot` that every trial needs; a blocker
actor holds the head's unit, so the first trial must start on the second node. The test kills
the second node's processes (its process group and the processes naming its own temp dir, never
by a process name), then releases the head's slot.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_multinode import (  # noqa: E402
    NODE2_RESOURCE, RAY_ENV, START_TIMEOUT_S, PortPool, _node_ports, _start_node, stop_nodes,
)

from affectune.store import open_store  # noqa: E402
from affectune.studies import StudySpec, run_study  # noqa: E402

# Not marked `cluster` though it starts Ray: tests/shards.py balances its two shards by time.

SLOT = "slot"
EPOCHS = 3


@ray.remote(num_cpus=0, resources={SLOT: 1})
class _Blocker:
    def ready(self) -> bool:
        return True


@pytest.fixture
def two_nodes():
    root = Path(tempfile.mkdtemp(prefix="afft-nk-", dir="/tmp"))
    ports, nodes = PortPool(), []
    gcs_port = ports.one()
    saved_env = {key: os.environ.get(key) for key in RAY_ENV}
    try:
        head = _start_node("head", ["--head", f"--port={gcs_port}", "--num-cpus=2", "--num-gpus=0",
                                    f"--resources={json.dumps({SLOT: 1})}",
                                    f"--ray-client-server-port={ports.one()}", "--include-dashboard=true",
                                    "--dashboard-host=127.0.0.1", f"--dashboard-port={ports.one()}",
                                    *_node_ports(ports)], root)
        nodes.append(head)
        head.wait_started()
        node2 = _start_node("node2", [f"--address=127.0.0.1:{gcs_port}", "--num-cpus=2", "--num-gpus=0",
                                      f"--resources={json.dumps({SLOT: 1, NODE2_RESOURCE: 1})}",
                                      "--include-log-monitor=false", *_node_ports(ports)], root)
        nodes.append(node2)
        node2.wait_started()
        os.environ.update(RAY_ENV)
        if ray.is_initialized():
            ray.shutdown()
        gcs = f"127.0.0.1:{gcs_port}"
        ray.init(address=gcs, log_to_driver=False)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, "the two nodes never both joined"
            time.sleep(0.5)
        alive = [n for n in ray.nodes() if n["Alive"]]
        ids = {("node2" if NODE2_RESOURCE in n["Resources"] else "head"): n["NodeID"] for n in alive}
        yield gcs, ids, root, nodes
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        survivors = stop_nodes(nodes, str(root))
        assert not survivors, f"processes of the test cluster survived: {survivors}"


def test_lost_node_trials_rescheduled_on_the_head(two_nodes, tmp_path):
    gcs, ids, root, nodes = two_nodes
    blocker = _Blocker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(ids["head"], soft=False)).remote()
    ray.get(blocker.ready.remote(), timeout=120)
    spec = StudySpec(name="lose-node", method="dqf", dataset="synthetic:mosi?scale=0.03", num_trials=2,
                     max_concurrent=1, use_asha=False, execution="in_process", resources_per_worker={SLOT: 1},
                     max_failures=2, base_config={"epochs": EPOCHS, "batch_size": 16, "patience": None,
                                                  "model_config": {"hidden": 12}},
                     storage=str(tmp_path / "store"), mask_seeds=(0,), train_seeds=(4,), eval_splits=("test",),
                     verbose=0, seed=4)  # train_seeds = (seed,): the evaluation reuses the search runs
    store, lost = open_store(spec.storage), {}

    def kill_node2_mid_trial():
        deadline = time.time() + 300
        while time.time() < deadline:
            rows = store.trials(spec.name)
            if len(rows) and (rows["epochs_run"].fillna(0) >= 1).any():
                row = rows.iloc[0]
                lost.update(trial=row["trial_id"], node=row["node_id"], epochs=int(row["epochs_run"]))
                lost["survivors"] = stop_nodes([nodes[1]], str(root / "node2"))
                lost["at"] = time.time()
                ray.kill(blocker)  # the head's slot is free: the trial can move there
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_node2_mid_trial, daemon=True)
    watcher.start()
    result = run_study(spec, address=gcs)
    watcher.join(timeout=5)
    assert lost and lost["node"] == ids["node2"] and not lost["survivors"]

    trials = result.trials.set_index("trial_id")
    assert len(trials) == 2 and trials.index.is_unique and (trials["status"] == "completed").all()
    assert (trials["node_id"] == ids["head"]).all()  # the lost trial finished on the head, and the next
    moved = trials.loc[lost["trial"]]
    assert int(moved["attempts"]) == 2
    assert [int(e["epoch"]) for e in json.loads(moved["learning_curve"])] == list(range(1, EPOCHS + 1))
    files = glob.glob(os.path.join(spec.tune_storage, spec.name, f"*{lost['trial']}*", "result.json"))
    epochs = [int(json.loads(line)["epoch"]) for f in files for line in open(f) if line.strip()]
    assert len(epochs) - len(set(epochs)) <= 1, epochs  # continued, not restarted from epoch 1
    print(f"\n[fault] node2 lost after epoch {lost['epochs']}: epochs re-run "
          f"{len(epochs) - len(set(epochs))}; search finished "
          f"{time.time() - lost['at']:.1f} s after the loss (incl. evaluation)")
