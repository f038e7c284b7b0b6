"""The study side of the GPU cluster path, tested without a cluster: the spec refuses what NCCL
cannot run, the store defaults to $AFFECTUNE_STORAGE and must be shared on a cluster, trials wait
for cold nodes, and the code version ships with the code (that Ray Train runs record their device is
checked on the study scripts' smoke runs, tests/test_study_scripts.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from affectune.studies import cli  # noqa: E402
from affectune.studies.runner import autoscaler_adds_nodes  # noqa: E402
from affectune.studies.spec import COLD_START_TIMEOUT_S, StoreNotShared, StudySpec, check_store_shared  # noqa: E402
from ray_start import start_ray  # noqa: E402

pytestmark = pytest.mark.cluster  # tests/shards.py runs these beside the rest

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- GPUs per worker
@pytest.mark.parametrize("gpus", [0.5, 0.25, 1.5])
def test_fractional_gpus_with_several_workers_are_refused_with_what_to_do(gpus):
    with pytest.raises(ValueError) as refused:
        StudySpec(name="s", method="dqf", workers_per_trial=2, gpus_per_worker=gpus)
    message = str(refused.value)
    assert f"gpus_per_worker={gpus}" in message and "NCCL" in message
    assert "gpus_per_worker=1" in message and "workers_per_trial=1" in message  # the two ways out


@pytest.mark.parametrize(("workers", "gpus"), [(1, 0.5), (2, 1.0), (2, 2.0), (4, 0.0), (1, 1.5)])
def test_whole_gpus_or_one_worker_are_accepted(workers, gpus):
    StudySpec(name="s", method="dqf", workers_per_trial=workers, gpus_per_worker=gpus)


def test_cli_reports_the_refusal_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match="error: .*NCCL"):
        cli.study_main("dqf", "d", argv=["--workers-per-trial", "2", "--gpus-per-worker", "0.5",
                                                   "--storage", str(tmp_path)])


# ----------------------------------------------------------------------------- the store
def test_storage_defaults_to_affectune_storage(monkeypatch):
    monkeypatch.setenv("AFFECTUNE_STORAGE", "s3://bucket/x")
    assert cli.build_parser("dqf", "d", {}).parse_args([]).storage == "s3://bucket/x"
    monkeypatch.setenv("AFFECTUNE_STORAGE", "")
    assert cli.build_parser("dqf", "d", {}).parse_args([]).storage == cli.REPO_RESULTS
    monkeypatch.delenv("AFFECTUNE_STORAGE")
    assert cli.build_parser("dqf", "d", {}).parse_args([]).storage == cli.REPO_RESULTS


def test_study_script_help_shows_the_environment_default():
    env = {**os.environ, "AFFECTUNE_STORAGE": "s3://bucket/x"}
    out = subprocess.run([sys.executable, "studies/dqf_search.py", "--help"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    storage_help = " ".join(out.rsplit("--storage STORAGE", 1)[1].split("--shared-storage", 1)[0].split())
    assert "$AFFECTUNE_STORAGE" in storage_help and "(default: s3://bucket/x)" in storage_help


def _spec(storage: str, **kw) -> StudySpec:
    return StudySpec(name="s", method="dqf", storage=storage, **kw)


def test_node_local_store_is_refused_on_a_multi_machine_or_autoscaling_cluster(tmp_path):
    local = str(tmp_path)
    check_store_shared(_spec(local), hosts=1, autoscaling=False)  # a laptop or one machine: fine
    for hosts, autoscaling in ((2, False), (1, True)):  # a `ray up` cluster starts with its head alone
        with pytest.raises(StoreNotShared) as refused:
            check_store_shared(_spec(local), hosts=hosts, autoscaling=autoscaling)
        message = str(refused.value)
        assert local in message and "--storage s3://" in message and "AFFECTUNE_STORAGE" in message
        assert "--shared-storage" in message
    with pytest.raises(StoreNotShared, match="file:///x"):
        check_store_shared(_spec("file:///x"), hosts=2, autoscaling=False)
    # Tune's run directories must be shared too.
    with pytest.raises(StoreNotShared, match="ray-runs"):
        check_store_shared(_spec("s3://bucket/x", ray_storage_path=str(tmp_path / "ray-runs")), 2, True)
    check_store_shared(_spec("s3://bucket/x"), hosts=3, autoscaling=True)
    check_store_shared(_spec(local, shared_storage=True), hosts=3, autoscaling=True)  # NFS / EFS


def test_autoscaler_report_tells_ray_up_from_a_manual_cluster():
    # What the monitor publishes (AutoscalerSummary as a dict): the read-only provider of
    # `ray.init()` / `ray start` names each node "node_<id>" and launches nothing.
    readonly = {"active_nodes": {"node_" + "ab12" * 14: 1}, "pending_launches": {}, "pending_nodes": []}
    assert not autoscaler_adds_nodes(readonly)
    assert not autoscaler_adds_nodes({})
    head_only = {"active_nodes": {"head": 1}, "pending_launches": {}, "pending_nodes": []}
    assert autoscaler_adds_nodes(head_only)
    launching = {"active_nodes": {}, "pending_launches": {"gpu_1x_a10g": 1},
                 "pending_nodes": [["10.0.0.5", "gpu_1x_a10g", "setting-up"]]}
    assert autoscaler_adds_nodes(launching)


@pytest.fixture(scope="module")
def local_ray() -> float:
    """One local Ray (2 CPUs) for this module's tests that need one (Ray starts once); yields when
    it started (time.monotonic)."""
    import ray

    if ray.is_initialized():
        pytest.skip("needs its own local Ray")
    start_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield time.monotonic()
    ray.shutdown()


def test_cluster_shape_of_a_local_ray_is_one_machine_without_autoscaler(local_ray):
    from affectune.studies.runner import cluster_shape

    # the monitor publishes its first status after an update (about 5 s after Ray started)
    time.sleep(max(0.0, 6.0 - (time.monotonic() - local_ray)))
    assert cluster_shape() == (1, False)


# ----------------------------------------------------------------------------- cold starts
def _args(*argv: str):
    return cli.build_parser("dqf", "d", {}).parse_args(list(argv))


def test_cold_start_timeout_defaults_on_a_cluster_address(tmp_path):
    store = ["--storage", str(tmp_path)]
    assert cli.spec_from_args("dqf", _args(*store)).worker_start_timeout_s is None  # local Ray: Ray's 60 s
    on_cluster = cli.spec_from_args("dqf", _args(*store, "--address", "auto"))
    assert on_cluster.worker_start_timeout_s == COLD_START_TIMEOUT_S >= 600  # a g5 node: ~10 min
    explicit = cli.spec_from_args("dqf", _args(*store, "--address", "auto", "--worker-start-timeout", "90"))
    assert explicit.worker_start_timeout_s == 90


def test_trial_hands_the_timeout_and_failure_limit_to_ray_train(monkeypatch):
    """_fit_with_ray_train sets Ray Train's start-timeout variable where fit() runs (Ray's own
    get_env_vars_to_propagate then ships it to the controller) and the controller failure limit."""
    import ray.train.torch
    import ray.tune.integration.ray_train
    from ray.train.v2._internal.constants import WORKER_GROUP_START_TIMEOUT_S_ENV_VAR, get_env_vars_to_propagate

    from affectune.studies import trial

    seen = {}

    class FakeTrainer:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def fit(self):
            seen["env_at_fit"] = get_env_vars_to_propagate()

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    monkeypatch.setattr(ray.tune.integration.ray_train, "TuneReportCallback", ray.train.UserCallback)  # needs a Tune session
    monkeypatch.delenv(WORKER_GROUP_START_TIMEOUT_S_ENV_VAR, raising=False)
    ctx = trial.TrialContext(study="s", method="dqf", dataset_source="synthetic:mosi", fingerprint="f",
                             code_version="c", store_root="/tmp/x", base_config={}, helpers=(),
                             objectives=(("objective", "min"),), execution="train", workers=2,
                             gpus_per_worker=1.0, cpus_per_worker=1.0, resources_per_worker={},
                             tune_storage="/tmp/x/ray", seed=0, worker_start_timeout_s=1200.0,
                             controller_failure_limit=3)
    trial._fit_with_ray_train(ctx, "t1", {"artifact_name": "t1"})
    assert seen["env_at_fit"][WORKER_GROUP_START_TIMEOUT_S_ENV_VAR] == "1200.0"
    assert seen["run_config"].failure_config.controller_failure_limit == 3
    assert seen["scaling_config"].num_workers == 2 and seen["scaling_config"].use_gpu


def test_run_records_its_device_and_caps_nothing_on_cpu():
    from affectune.studies import trial

    ctx = trial.TrialContext(study="s", method="dqf", dataset_source="d", fingerprint="f", code_version="c",
                             store_root="/tmp/x", base_config={}, helpers=(), objectives=(("objective", "min"),),
                             execution="in_process", workers=1, gpus_per_worker=0.0, cpus_per_worker=1.0,
                             resources_per_worker={}, tune_storage="/tmp/x", seed=0)
    row = trial._claim_device(ctx, {"device": "cpu"})
    assert row["device"] == "cpu" and row["device_name"]


# ----------------------------------------------------------------------------- lineage
def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_code_version_ships_with_a_partial_copy_of_the_tree(tmp_path):
    """A node holds only the shipped directories plus .git (cluster.yaml's file_mounts): the
    setup command writes CODE_VERSION from git there, and code_version() reads it."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    node = tmp_path / "affectune"
    _git(tmp_path, "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(node))
    sha = _git(node, "rev-parse", "--short=12", "HEAD")
    for entry in node.iterdir():  # keep what cluster.yaml ships
        if entry.name not in {".git", "platform", "models", "studies", "pyproject.toml"}:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    assert _git(node, "status", "--porcelain", "--untracked-files=no")  # plain git calls the copy dirty

    def on_node(code: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(node / "platform")}
        return subprocess.run([sys.executable, "-c", code], cwd=node, env=env, capture_output=True,
                              text=True, timeout=60, check=True).stdout.strip()

    written = on_node("import affectune; print(affectune.write_code_version())")
    assert written == f"0.1.0+g{sha}"  # clean: the shipped files equal the commit
    assert (node / "platform/affectune/CODE_VERSION").read_text().strip() == written
    shutil.rmtree(node / ".git")  # a run on the node needs no git any more
    assert on_node("import affectune; print(affectune.code_version())") == written

    edited = tmp_path / "edited"
    _git(tmp_path, "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(edited))
    with open(edited / "platform/affectune/devices.py", "a") as handle:
        handle.write("# local edit\n")
    env = {**os.environ, "PYTHONPATH": str(edited / "platform")}
    out = subprocess.run([sys.executable, "-c", "import affectune; print(affectune.write_code_version())"],
                         cwd=edited, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == f"0.1.0+g{sha}.dirty"
