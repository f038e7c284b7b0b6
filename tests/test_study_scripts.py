"""Every study script (studies/*_search.py) runs as a user types it on MMSA- and MERBench-format
files, with and without --smoke-test, tiny budgets; the summary, the store and the flags agree.

The scripts run as subprocesses, four at a time, against one Ray session of this module, so the
suite pays Ray's start-up once. It declares 4 logical CPUs (the work is tiny, one torch thread
each): with 2, a smoke test's Ray Train worker group waits for the in-process trials of the
others and its start-up times out. Run under
`flock /tmp/affectune-ray.lock` like the other Ray tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "90")

import ray  # noqa: E402

from affectune.store import open_store  # noqa: E402
from test_data_loaders import write_mmsa, write_merbench  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(REPO.glob("studies/*_search.py"))
"""Every method's study script: a new method's script is covered without editing this file."""
TINY = ["--trials", "1", "--epochs", "1", "--train-seeds", "0", "--mask-seeds", "0", "--concurrent", "1"]
CASES = [(fmt, smoke) for fmt in ("mmsa", "merbench") for smoke in (True, False)]
MAX_AT_ONCE = 4


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=4, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """Small files in the two user-file layouts (the loaders' own test fixtures)."""
    root = tmp_path_factory.mktemp("user-files")
    write_mmsa(root / "aligned_50.pkl", True, np.random.default_rng(0))
    (root / "merbench").mkdir()
    write_merbench(root / "merbench", np.random.default_rng(1))
    return {"mmsa": f"mmsa:{root / 'aligned_50.pkl'}", "merbench": f"merbench:{root / 'merbench'}"}


@pytest.fixture(scope="module")
def runs(ray_address, sources, tmp_path_factory) -> dict:
    """(script, format, smoke) -> (return code, output, store root); at most MAX_AT_ONCE at a time
    (more only queue for the same CPUs, and queued Ray Train worker groups time out)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cases = [(script, fmt, smoke) for script in SCRIPTS for fmt, smoke in CASES]
    running, done = {}, {}
    while cases or running:
        while cases and len(running) < MAX_AT_ONCE:
            script, fmt, smoke = cases.pop(0)
            name = f"{script.stem}-{fmt}-{'smoke' if smoke else 'full'}"
            store = tmp_path_factory.mktemp(name)
            # distinct names: Tune stages concurrent experiments by name and start second on one cluster
            argv = [sys.executable, str(script), "--dataset", sources[fmt], *TINY, "--storage", str(store),
                    "--name", name, "--address", ray_address, *(["--smoke-test"] if smoke else [])]
            log = open(tmp_path_factory.mktemp("logs") / f"{name}.txt", "w+")  # a file: a pipe could fill up
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            running[(script.stem, fmt, smoke)] = (proc, log, store, time.time())
        for key, (proc, log, store, started) in list(running.items()):
            if proc.poll() is not None or time.time() - started > 600:
                if proc.poll() is None:
                    proc.kill()
                code = proc.wait()
                log.seek(0)
                done[key] = (code, log.read(), store)
                log.close()
                del running[key]
        time.sleep(1)
    return done


@pytest.mark.parametrize("fmt,smoke", CASES, ids=[f"{f}-{'smoke' if s else 'full'}" for f, s in CASES])
@pytest.mark.parametrize("script", [s.stem for s in SCRIPTS])
def test_study_script_runs_on_user_files(runs, script, fmt, smoke):
    returncode, out, store = runs[(script, fmt, smoke)]
    assert returncode == 0, out[-4000:]
    name = f"{script}-{fmt}-{'smoke' if smoke else 'full'}"
    assert f"=== study {name}: 1 trials (1 completed)" in out, out[-4000:]
    assert "AUILC on test" in out
    # quiet by default: no Tune banner, status table or TensorBoard hint
    for noise in ("View detailed results here", "tensorboard", "Trial status", "Configuration for experiment"):
        assert noise not in out, noise
    st = open_store(str(store))
    trials = st.trials(name)
    assert len(trials) == 1 and trials["status"].tolist() == ["completed"]
    assert trials["epochs_run"].tolist() == [1] and bool(trials["selected"].iloc[0])
    assert trials["dataset"].iloc[0].startswith(f"{fmt}:")  # the user's file, no ?scale= appended
    assert set(st.curves(name)["split"]) == {"test"}  # these files have no ood split
    assert json.loads(trials["config"].iloc[0])["epochs"] == 1
