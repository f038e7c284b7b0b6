"""A real two-node Ray cluster on one machine: the multi-node path of `cluster.yaml`, tested.

The module starts a head (`ray start --head`) and a second node (`ray start --address=...`)
on this host, each with its own temp dir and free ports (Ray replaces a loopback node IP by
the host's own address, `services.resolve_ip_for_localhost`, so both listen there); only the second node has the custom
resource `node2`, so anything that asks for it must run there. Both nodes are started with
`--block` in new process sessions that this module owns, and are stopped by killing those
process groups (plus any stray process whose command line names our private temp dir):
never `ray stop`, which kills every Ray process on the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import ray

pytestmark = pytest.mark.cluster  # tests/shards.py runs these beside the rest

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_CLI = Path(sys.executable).with_name("ray")
NODE2_RESOURCE = "node2"
NODE2_RESOURCE_UNITS = 10
START_TIMEOUT_S = 90.0
# A short grace for the processes that honour SIGTERM: `ray start --block` and gcs_server ignore
# it for >10 s, so waiting longer only delays their SIGKILL.
STOP_GRACE_S = 1.0

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    # A placement group that can never be satisfied should fail a test, not hang it.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
    # Ray's memory monitor kills workers when the whole machine is short of memory, whoever uses it
    # (an ActorDiedError in a trial here once, with the suite's background runs beside it).
    "RAY_memory_monitor_refresh_ms": "0",
}


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortPool:
    """Hands out distinct ports that were free when picked (each node needs about ten)."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def one(self) -> int:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise RuntimeError("no free port found on 127.0.0.1")

    def range(self, size: int) -> tuple[int, int]:
        """A block of `size` consecutive free ports for the node's workers."""
        rng = random.Random()
        for _ in range(200):
            low = rng.randrange(20000, 60000 - size)
            block = range(low, low + size)
            if not self.taken.intersection(block) and all(_port_is_free(p) for p in block):
                self.taken.update(block)
                return low, low + size - 1
        raise RuntimeError(f"no block of {size} free ports found on 127.0.0.1")


@dataclass
class RayNode:
    """One `ray start --block` process that this test owns, in its own process group."""

    name: str
    process: subprocess.Popen
    log_path: Path
    temp_dir: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_started(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log_text():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(
            f"ray node {self.name} did not start (exit code {self.process.poll()}); log:\n{self.log_text()[-4000:]}"
        )


def _pids_naming(marker: str) -> set[int]:
    """Process ids whose command line mentions `marker` (our private temp dir)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (its parent reaps it).
    with contextlib.suppress(OSError):
        if (Path("/proc") / str(pid) / "stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _signal_all(nodes: list[RayNode], marker: str, sig: int) -> set[int]:
    """Send `sig` to each node's process group and to every process naming our temp dir."""
    targets = _pids_naming(marker)
    for node in nodes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.process.pid, sig)  # start_new_session: pgid == pid
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return targets | {node.process.pid for node in nodes}


def stop_nodes(nodes: list[RayNode], marker: str) -> list[int]:
    """SIGTERM, then SIGKILL after a grace period; returns pids that still survive."""
    pending = _signal_all(nodes, marker, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_alive(p) for p in pending | _pids_naming(marker)):
        for node in nodes:
            node.process.poll()  # reap our direct children
        time.sleep(0.3)
    pending = {p for p in pending | _pids_naming(marker) if _alive(p)}
    if pending:
        _signal_all(nodes, marker, signal.SIGKILL)
        time.sleep(1.0)
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.process.wait(timeout=5)
    return sorted(p for p in pending | _pids_naming(marker) if _alive(p))


@dataclass
class TwoNodeCluster:
    """Addresses and node ids of the head and the second node."""

    gcs_address: str
    head_node_id: str
    node2_node_id: str
    root: Path
    nodes: list[RayNode] = field(default_factory=list)


def _start_node(name: str, args: list[str], root: Path) -> RayNode:
    temp_dir = root / name
    temp_dir.mkdir()
    log_path = root / f"{name}.log"
    env = {**os.environ, **RAY_ENV}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(RAY_CLI), "start", "--block", f"--temp-dir={temp_dir}", "--disable-usage-stats", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return RayNode(name=name, process=process, log_path=log_path, temp_dir=temp_dir)


def _node_ports(ports: PortPool) -> list[str]:
    low, high = ports.range(40)
    return [
        f"--node-manager-port={ports.one()}",
        f"--object-manager-port={ports.one()}",
        f"--dashboard-agent-listen-port={ports.one()}",
        f"--dashboard-agent-grpc-port={ports.one()}",
        f"--runtime-env-agent-port={ports.one()}",
        f"--metrics-export-port={ports.one()}",
        f"--min-worker-port={low}",
        f"--max-worker-port={high}",
        "--object-store-memory=100000000",
    ]


@pytest.fixture(scope="module")
def cluster():
    # Unix socket paths are limited to ~107 bytes: keep the root short.
    root = Path(tempfile.mkdtemp(prefix="afft-mn-", dir="/tmp"))
    marker = str(root)
    ports = PortPool()
    gcs_port = ports.one()
    nodes: list[RayNode] = []
    saved_env = {key: os.environ.get(key) for key in RAY_ENV}
    try:
        head = _start_node(
            "head",
            [
                "--head",
                f"--port={gcs_port}",
                "--num-cpus=1",
                "--num-gpus=0",
                f"--ray-client-server-port={ports.one()}",
                "--include-dashboard=true",  # Train's placement-group cleaner needs it
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={ports.one()}",
                *_node_ports(ports),
            ],
            root,
        )
        nodes.append(head)
        head.wait_started()
        node2 = _start_node(
            "node2",
            [
                f"--address=127.0.0.1:{gcs_port}",
                "--num-cpus=2",
                "--num-gpus=0",
                f"--resources={json.dumps({NODE2_RESOURCE: NODE2_RESOURCE_UNITS})}",
                "--include-log-monitor=false",  # one log monitor per host
                *_node_ports(ports),
            ],
            root,
        )
        nodes.append(node2)
        node2.wait_started()

        gcs_address = f"127.0.0.1:{gcs_port}"
        os.environ.update(RAY_ENV)  # this driver too; restored in the finaliser
        if ray.is_initialized():  # a session left by another module would hide our cluster
            ray.shutdown()
        ray.init(address=gcs_address, log_to_driver=False)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            alive = [n for n in ray.nodes() if n["Alive"]]
            if len(alive) == 2 and any(NODE2_RESOURCE in n["Resources"] for n in alive):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the two nodes never both joined: {alive}")
            time.sleep(0.5)
        node2_id = next(n["NodeID"] for n in alive if NODE2_RESOURCE in n["Resources"])
        head_id = next(n["NodeID"] for n in alive if NODE2_RESOURCE not in n["Resources"])
        yield TwoNodeCluster(gcs_address, head_id, node2_id, root, nodes)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        survivors = stop_nodes(nodes, marker)
        shutil.rmtree(root, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"Ray processes of this test survived SIGKILL: {survivors}")


@ray.remote(num_cpus=0, resources={NODE2_RESOURCE: 1})
def _node_of_task_needing_node2() -> str:
    return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=1)
def _node_of_cpu_task() -> str:
    return ray.get_runtime_context().get_node_id()


def test_two_nodes_joined_with_their_own_resources(cluster):
    by_id = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    assert set(by_id) == {cluster.head_node_id, cluster.node2_node_id}
    assert by_id[cluster.head_node_id]["Resources"]["CPU"] == 1
    assert by_id[cluster.node2_node_id]["Resources"]["CPU"] == 2
    assert by_id[cluster.node2_node_id]["Resources"][NODE2_RESOURCE] == NODE2_RESOURCE_UNITS
    assert NODE2_RESOURCE not in by_id[cluster.head_node_id]["Resources"]


def test_custom_resource_places_tasks_on_the_second_node(cluster):
    placed = ray.get([_node_of_task_needing_node2.remote() for _ in range(4)], timeout=120)
    assert placed == [cluster.node2_node_id] * 4
    # The head is a working node too (the placement above was a choice, not the only option).
    on_head = ray.get(
        _node_of_cpu_task.options(
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                cluster.head_node_id, soft=False
            )
        ).remote(),
        timeout=120,
    )
    assert on_head == cluster.head_node_id


def test_stop_nodes_kills_every_process_of_a_node_and_nothing_else(tmp_path):
    """The stop machinery on a stand-in node: a process group whose child names the temp dir."""
    marker_dir = Path(tempfile.mkdtemp(prefix="afft-stop-", dir="/tmp"))
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        script = (
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker_dir}'])\n"
            "time.sleep(300)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
        node = RayNode("stand-in", process, tmp_path / "log", marker_dir)
        deadline = time.monotonic() + 20
        while not _pids_naming(str(marker_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        children = _pids_naming(str(marker_dir))
        assert children, "stand-in child never started"
        assert stop_nodes([node], str(marker_dir)) == []
        assert process.poll() is not None
        assert not any(_alive(pid) for pid in children)
        assert bystander.poll() is None, "a process outside the node was killed"
    finally:
        bystander.kill()
        bystander.wait()
        shutil.rmtree(marker_dir, ignore_errors=True)


def test_study_trials_run_on_the_second_node_and_all_reach_the_store(cluster):
    """The real study script, pointed at the cluster, with workers pinned to node2 by resource."""
    from affectune.store import open_store

    num_trials = 2
    store_root = cluster.root / "store"
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "studies" / "dqf_search.py"),
            "--smoke-test", "--quiet", "--trials", str(num_trials),
            "--address", cluster.gcs_address,
            "--storage", str(store_root),
            "--worker-resources", json.dumps({NODE2_RESOURCE: 1}),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, **RAY_ENV},
        capture_output=True,
        text=True,
        timeout=540,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, f"study failed after {elapsed:.0f} s:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"

    trials = open_store(str(store_root)).trials("dqf-smoke")
    assert len(trials) == num_trials, trials[["trial_id", "status"]]
    assert trials["trial_id"].is_unique
    errors = "\n".join(f"{row.trial_id} {row.status}: {row.error}" for row in trials.itertuples())
    assert set(trials["status"]) <= {"completed", "stopped"}, f"{errors}\n{completed.stderr[-3000:]}"
    # Every trial trained on node2 (the trial row records the node of the worker that trained it).
    assert list(trials["node_id"]) == [cluster.node2_node_id] * num_trials
    # The selected config was evaluated on the test grid and its curves landed in the same store.
    assert len(open_store(str(store_root)).curves("dqf-smoke")) > 0
