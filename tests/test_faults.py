"""Fault injection (docs/studies.md, "Failures and resume"): a read-only and a full study store,
a killed Ray Train worker (the trial resumes from its last epoch checkpoint) and a killed
driver followed by `--resume`.

Processes are killed by PID only: the Train worker's PID comes from this session's own Ray
actor table (`ray._private.state.actors()`, filtered to this job), never from a name match.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback test cluster this module starts
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "90")

import ray  # noqa: E402

from affectune.store import StudyStore, open_store  # noqa: E402
from affectune.studies import StudySpec, run_study  # noqa: E402
from ray_start import start_ray  # noqa: E402

pytestmark = pytest.mark.cluster  # tests/shards.py runs these beside the rest

DATASET = "synthetic:mosi?scale=0.03"
EPOCHS = 4


@pytest.fixture(scope="module")
def ray_session():
    start_ray(num_cpus=2, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# --- a broken store: read-only, then full (a fault-injecting pyarrow file system) ----------
class FaultyFS(pafs.FileSystemHandler):
    """Local files, with faults: `read_only` refuses every change (EROFS); `space` bytes (None:
    unlimited) may be written in all before writes fail with ENOSPC, mid-file."""

    def __init__(self):
        self.local, self.read_only, self.space = pafs.LocalFileSystem(), False, None

    def _change(self):
        if self.read_only:
            raise OSError(errno.EROFS, "Read-only file system")

    def get_type_name(self): return "faulty"
    def equals(self, other): return self is other
    def normalize_path(self, path): return path
    def get_file_info(self, paths): return self.local.get_file_info(paths)
    def get_file_info_selector(self, selector): return self.local.get_file_info(selector)
    def open_input_stream(self, path): return self.local.open_input_stream(path)
    def open_input_file(self, path): return self.local.open_input_file(path)

    def create_dir(self, path, recursive):
        self._change()
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path): self._change(); self.local.delete_dir(path)
    def delete_dir_contents(self, path, missing_dir_ok=False): self._change(); self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)
    def delete_root_dir_contents(self): raise OSError(errno.EPERM, "not here")
    def delete_file(self, path): self._change(); self.local.delete_file(path)
    def move(self, src, dest): self._change(); self.local.move(src, dest)
    def copy_file(self, src, dest): self._change(); self.local.copy_file(src, dest)
    def open_append_stream(self, path, metadata): raise OSError(errno.EPERM, "not here")

    def open_output_stream(self, path, metadata):
        self._change()
        return pa.PythonFile(_Quota(open(path, "wb"), self), mode="w")


class _Quota:
    """A file object that raises ENOSPC once the file system's space is used up."""

    def __init__(self, fh, fs: FaultyFS):
        self.fh, self.fs, self.closed = fh, fs, False

    def write(self, data):
        if self.fs.space is not None:
            if len(data) > self.fs.space:
                self.fh.write(bytes(data)[:self.fs.space])  # what fits is written: a half file
                self.fs.space = 0
                raise OSError(errno.ENOSPC, "No space left on device")
            self.fs.space -= len(data)
        return self.fh.write(data)

    def flush(self): self.fh.flush()
    def tell(self): return self.fh.tell()
    def writable(self): return True
    def readable(self): return False
    def seekable(self): return False

    def close(self):
        self.closed = True
        self.fh.close()


def _faulty_store(root: Path, monkeypatch) -> FaultyFS:
    """Every StudyStore opened at `root` (also inside run_study) goes through one FaultyFS."""
    handler = FaultyFS()
    original = StudyStore.__init__

    def init(self, r):
        original(self, r)
        if Path(self.base) == root:
            self.fs = pafs.PyFileSystem(handler)
            self._atomic_rename = True  # local files underneath: rename is atomic
    monkeypatch.setattr(StudyStore, "__init__", init)
    return handler


def _row(i: int, curve_len: int = 3) -> dict:
    return {"trial_id": f"t{i}", "status": "completed", "params": {"lr": 0.1}, "config": {},
            "seed": 0, "method": "dqf", "dataset": "d", "fingerprint": "f", "code_version": "0",
            "learning_curve": [{"epoch": e, "loss": 1.0 / e} for e in range(1, curve_len + 1)]}


def _visible(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_read_only_store_fails_before_the_study_starts(tmp_path, monkeypatch):
    root = tmp_path / "store"
    open_store(str(root)).write_trial("s", _row(0))
    files = _visible(root)
    handler = _faulty_store(root, monkeypatch)
    handler.read_only = True
    store = open_store(str(root))
    with pytest.raises(OSError, match=f"study store '{root}' is not writable: Read-only"):
        store.check_writable()
    with pytest.raises(OSError, match=f"study store '{root}' cannot write .*trial=t1.parquet"):
        store.write_trial("s", _row(1))
    assert _visible(root) == files and list(store.trials("s")["trial_id"]) == ["t0"]

    import affectune.studies.runner as runner
    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    spec = StudySpec(name="ro", method="dqf", dataset=DATASET, storage=str(root), verbose=0)
    with pytest.raises(OSError, match="not writable"):
        run_study(spec)  # refused before Ray starts, before any trial trains
    handler.read_only = False  # writable again: the same store takes writes
    store.write_trial("s", _row(1))
    assert sorted(open_store(str(root)).trials("s")["trial_id"]) == ["t0", "t1"]


def test_full_store_leaves_no_half_written_file(tmp_path, monkeypatch):
    root = tmp_path / "store"
    open_store(str(root)).write_trial("s", _row(0))
    before = open_store(str(root)).trials("s")
    files = _visible(root)
    handler = _faulty_store(root, monkeypatch)
    store = open_store(str(root))
    handler.space = 600  # less than one trial file: the disk fills mid-file
    with pytest.raises(OSError, match="cannot write .*No space left"):
        store.write_trial("s", _row(0, curve_len=200))  # rewriting t0 must not damage it
    with pytest.raises(OSError, match="cannot write .*No space left"):
        store.write_trial("s", _row(1))
    assert _visible(root) == files  # no half file under its final name, no temp file left
    after = open_store(str(root)).trials("s")
    assert after.equals(before) and not open_store(str(root)).problems
    handler.space = None  # space freed: the next writes land, readers see them whole
    store.write_trial("s", _row(0, curve_len=200))
    store.write_trial("s", _row(1))
    rows = open_store(str(root)).trials("s").set_index("trial_id")
    assert sorted(rows.index) == ["t0", "t1"] and len(json.loads(rows.loc["t0", "learning_curve"])) == 200


def _train_worker_pids() -> set[int]:
    """PIDs of this job's live Ray Train worker actors."""
    job = ray.get_runtime_context().get_job_id()
    return {a["Pid"] for a in ray._private.state.actors().values()
            if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"
            and a["JobID"] == job and a["Pid"]}


def _reported_epochs(tune_path: str) -> list[int]:
    """Every epoch Tune received, in order, over all attempts of the study's trials."""
    epochs = []
    for path in glob.glob(os.path.join(tune_path, "*", "result.json")):
        with open(path) as fh:
            epochs += [int(json.loads(line)["epoch"]) for line in fh if line.strip()]
    return epochs


def test_killed_train_worker_resumes_from_its_last_epoch(ray_session, tmp_path):
    spec = StudySpec(name="kill-worker", method="dqf", dataset=DATASET, num_trials=1, use_asha=False,
                     execution="train", workers_per_trial=1, cpus_per_worker=1, max_failures=1,
                     base_config={"epochs": EPOCHS, "batch_size": 16, "patience": None,
                                  "model_config": {"hidden": 12}},
                     storage=str(tmp_path / "store"), mask_seeds=(0,), train_seeds=(2,), eval_splits=("test",),
                     verbose=0, seed=2)  # train_seeds = (seed,): the evaluation reuses the search run
    store, killed = open_store(spec.storage), {}

    def kill_after_epoch_2():
        deadline = time.time() + 300
        while time.time() < deadline:
            rows = store.trials(spec.name)
            if len(rows) and int(rows["epochs_run"].fillna(0).max()) >= 2:
                pids = _train_worker_pids()
                if pids:
                    killed["epochs_reported"] = int(rows["epochs_run"].max())
                    killed["pid"] = pids.pop()
                    killed["at"] = time.time()
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_after_epoch_2, daemon=True)
    watcher.start()
    started = time.time()
    result = run_study(spec)
    watcher.join(timeout=5)
    assert killed, "the worker was never killed"
    assert killed["pid"] not in _train_worker_pids()

    row = result.trials.iloc[0]
    assert row["status"] == "completed" and int(row["attempts"]) == 1  # Train restarted the group
    curve = [int(e["epoch"]) for e in json.loads(row["learning_curve"])]
    assert curve == list(range(1, EPOCHS + 1))  # each epoch once in the store
    reported = _reported_epochs(os.path.join(spec.tune_storage, spec.name))
    # Resumed, not restarted: no epoch reported twice (a restart from scratch re-reports 1, 2, ...)
    assert sorted(reported) == list(range(1, EPOCHS + 1)), reported
    search_end = started + result.search_wall_s
    print(f"\n[fault] worker SIGKILL after epoch {killed['epochs_reported']}: epochs re-run "
          f"{len(reported) - len(set(reported))} reported (at most the interrupted one trained again); "
          f"trial finished {search_end - killed['at']:.1f} s after the kill; search "
          f"{result.search_wall_s:.1f} s")


DRIVER = """
import json, sys
from affectune.studies import StudySpec, run_study
run_study(StudySpec(**json.loads(sys.argv[1])), address=sys.argv[2])
"""


def test_killed_driver_then_resume(ray_session, tmp_path):
    """SIGKILL the driver (no chance to save anything) while the second of two trials is mid-way, then --resume:
    full trial count, no duplicated params or rows, finished trials not retrained, the
    interrupted trial continues from its last epoch."""
    kwargs = dict(name="kill-driver", method="dqf", dataset=DATASET, search_space="paper", num_trials=2,
                  max_concurrent=1, use_asha=False, execution="in_process",
                  base_config={"epochs": 4, "batch_size": 16, "patience": None, "model_config": {"hidden": 12}},
                  storage=str(tmp_path / "store"), mask_seeds=[0], train_seeds=[1], eval_splits=["test"],
                  verbose=0, seed=1)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(kwargs), ray_session],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"})
    store = open_store(kwargs["storage"])
    deadline, rows = time.time() + 300, None
    while time.time() < deadline and driver.poll() is None:  # one trial done, the next past epoch 2
        rows = store.trials("kill-driver")
        if len(rows) and (rows["status"] == "completed").sum() >= 1 and \
                (rows.loc[rows["status"] != "completed", "epochs_run"].fillna(0) >= 2).any():
            break
        time.sleep(0.2)
    assert driver.poll() is None, driver.communicate()[0][-3000:]
    os.kill(driver.pid, signal.SIGKILL)  # the PID this test started
    driver.communicate(timeout=60)
    killed_at = time.time()
    before = store.trials("kill-driver").set_index("trial_id")
    done_before = before[before["status"] == "completed"]
    partial = before[before["status"] != "completed"]
    assert len(done_before) >= 1 and len(partial) >= 1

    result = run_study(StudySpec(**kwargs), resume=True)
    recovered = time.time() - killed_at
    after = result.trials.set_index("trial_id")
    assert len(after) == 2 and after.index.is_unique and not result.interrupted
    assert (after["status"] == "completed").all()
    assert after["params"].map(lambda p: tuple(sorted(json.loads(p).items()))).is_unique
    assert store.trials("kill-driver")["trial_id"].is_unique  # no duplicated store rows
    for t in done_before.index:  # not retrained: same attempt, same wall time
        assert after.loc[t, "attempts"] == 1
        assert after.loc[t, "wall_time_s"] == done_before.loc[t, "wall_time_s"]
    for t, row in after.iterrows():  # each epoch once in every curve
        assert [int(e["epoch"]) for e in json.loads(row["learning_curve"])] == [1, 2, 3, 4]
    tune_path = os.path.join(StudySpec(**kwargs).tune_storage, "kill-driver")
    rerun = {}
    for t in partial.index:  # continued after its last reported epoch, not from epoch 1
        files = glob.glob(os.path.join(tune_path, f"*{t}*", "result.json"))
        epochs = [int(json.loads(line)["epoch"]) for f in files for line in open(f) if line.strip()]
        rerun[t] = len(epochs) - len(set(epochs))
        assert rerun[t] <= 1, epochs
    print(f"\n[fault] driver SIGKILL with {len(partial)} trial(s) mid-way at epoch "
          f"{int(partial['epochs_run'].max())}: epochs re-run {rerun}, resumed study done "
          f"{recovered:.1f} s after the kill")


# --- ASHA stops an in-process trial: no stack trace, no thread left in torch ------------------
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_studies import learner_then_stuck  # noqa: E402  (lr 1e-2, 1e-7, 8e-3, in that order)

TRACE_MARKS = ("Traceback", "Fatal Python error", "SIGABRT", "Aborted", "terminate called",
               "did not end within")


def _actor_output(tune_path: str) -> dict[str, str]:
    """trial dir -> stdout + stderr of the actor process that ran it (Ray's worker log files,
    found by the `pid` Tune recorded in each result)."""
    logs = ray._private.worker._global_node.get_logs_dir_path()
    out = {}
    for result in glob.glob(os.path.join(tune_path, "*", "result.json")):
        with open(result) as fh:
            pids = {json.loads(line)["pid"] for line in fh if line.strip()}
        texts = [Path(f).read_text(errors="replace") for pid in pids
                 for f in glob.glob(os.path.join(logs, f"worker-*-{pid}.*")) if f.endswith((".out", ".err"))]
        out[os.path.basename(os.path.dirname(result))] = "\n".join(texts)
    return out


def test_a_stopped_trial_actor_waits_for_its_thread_to_leave_torch(ray_session, tmp_path):
    """Without CleanStop Tune's actor exits while the thread is still in torch (marker never
    written; at interpreter exit that can abort with a SIGABRT trace); with it, the thread ends first."""
    from ray import tune

    from affectune.studies.trial import CleanStop

    def trainable(config):  # local, so it pickles by value: the trial actor cannot import this module
        """Reports until Tune stops it, then keeps torch busy while it unwinds (as a loop's frames
        being torn down would) and leaves a marker when its thread is done."""
        import torch

        try:
            while True:
                ray.tune.report({"alive": 1})
        finally:
            a, end = torch.randn(200, 200), time.time() + 2
            while time.time() < end:
                a = torch.tanh(a @ a)
            Path(config["marker"]).write_text("thread ended")

    trainable.__mixins__ = (CleanStop,)
    marker = tmp_path / "marker"
    tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space={"marker": str(marker)},
               run_config=tune.RunConfig(stop={"training_iteration": 1}, storage_path=str(tmp_path / "ray"),
                                         verbose=0)).fit()
    deadline = time.time() + 30
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists() and marker.read_text() == "thread ended"


def test_asha_stops_an_in_process_trial_without_a_stack_trace(ray_session, tmp_path, capfd):
    spec = StudySpec(name="asha-clean", method="dqf", dataset=DATASET, search_space=learner_then_stuck,
                     num_trials=3, max_concurrent=1, execution="in_process", grace_period=3, reduction_factor=2,
                     base_config={"epochs": 4, "batch_size": 4, "patience": None, "model_config": {"hidden": 12}},
                     storage=str(tmp_path / "store"), mask_seeds=(0,), train_seeds=(3,), eval_splits=("test",),
                     verbose=0, seed=3)
    result = run_study(spec)
    time.sleep(2)  # the stopped actors have exited; their logs are flushed
    rows = result.trials.assign(lr=[json.loads(p)["lr"] for p in result.trials["params"]]).set_index("trial_id")
    stuck, learners = rows[rows["lr"] == 1e-7], rows[rows["lr"] != 1e-7]
    assert len(stuck) == 1 and len(learners) == 2
    assert (stuck["status"] == "stopped").all() and (stuck["epochs_run"] == 3).all()  # ASHA's rung at epoch 3
    assert (learners["status"] == "completed").all() and (learners["epochs_run"] == 4).all()
    outputs = _actor_output(os.path.join(spec.tune_storage, spec.name))
    assert len(outputs) == 3 and all(outputs.values()), outputs.keys()  # every trial actor's log was read
    for trial_dir, text in outputs.items():
        assert not [m for m in TRACE_MARKS if m in text], (trial_dir, text[-3000:])
    driver = capfd.readouterr()
    assert not [m for m in TRACE_MARKS if m in driver.out + driver.err], (driver.out + driver.err)[-3000:]
