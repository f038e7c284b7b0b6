"""Every study script (studies/*_search.py) runs as a user types it on MMSA- and MERBench-format
files, with and without --smoke-test, tiny budgets; the summary, the store and the flags agree.

The 20 cases run against one Ray session of this module, so the suite pays Ray's start-up once,
in RUNNERS interpreters at a time (tests/run_scripts.py: each runs its share of the scripts one
after another, each as `python SCRIPT ARGS` would, so torch, Ray and a Ray job's worker pool start
once per runner, not once per case). It declares 4 logical CPUs (the work is tiny, one torch
thread each): with 2, a smoke test's Ray Train worker group waits for the in-process trials of the
others and its start-up times out. Run under `flock /tmp/affectune-ray.lock` like the other Ray tests.
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
RUNNERS = 4
RUNNER = REPO / "tests" / "run_scripts.py"
TIME_LIMIT_S = 900


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
    """(script, format, smoke) -> (exit code, output, store root). Script k's case c goes to runner
    (k + c) % RUNNERS, so every runner gets a mix of smoke and full cases. RUNNERS at a time: more
    only queue for the same CPUs, and queued Ray Train worker groups time out."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    work = tmp_path_factory.mktemp("runs")
    shares: list[list] = [[] for _ in range(RUNNERS)]
    for k, script in enumerate(SCRIPTS):
        for c, (fmt, smoke) in enumerate(CASES):
            name = f"{script.stem}-{fmt}-{'smoke' if smoke else 'full'}"
            # distinct names: Tune stages concurrent experiments by name and start second on one cluster
            argv = [str(script), "--dataset", sources[fmt], *TINY, "--storage", str(work / name), "--name", name,
                    "--address", ray_address, *(["--smoke-test"] if smoke else [])]
            shares[(k + c) % RUNNERS].append(((script.stem, fmt, smoke), {"argv": argv, "log": str(work / f"{name}.log")},
                                              work / name))
    procs = []
    for i, share in enumerate(shares):
        (work / f"cases{i}.json").write_text(json.dumps([case for _, case, _ in share]))
        with open(work / f"runner{i}.log", "w") as log:  # the runner's own errors, if any
            procs.append(subprocess.Popen([sys.executable, str(RUNNER), str(work / f"cases{i}.json"),
                                           str(work / f"codes{i}.json")], cwd=REPO, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    deadline, done = time.monotonic() + TIME_LIMIT_S, {}
    for i, (proc, share) in enumerate(zip(procs, shares)):
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        codes_file = work / f"codes{i}.json"
        codes = json.loads(codes_file.read_text()) if codes_file.exists() else []
        runner_log = (work / f"runner{i}.log").read_text(errors="replace")
        for j, (key, case, store) in enumerate(share):
            log = Path(case["log"])
            out = log.read_text(errors="replace") if log.exists() else ""
            code = codes[j] if j < len(codes) else f"none (runner exit {proc.returncode}) {runner_log[-2000:]}"
            done[key] = (code, out, store)
    return done


@pytest.mark.parametrize("fmt,smoke", CASES, ids=[f"{f}-{'smoke' if s else 'full'}" for f, s in CASES])
@pytest.mark.parametrize("script", [s.stem for s in SCRIPTS])
def test_study_script_runs_on_user_files(runs, script, fmt, smoke):
    returncode, out, store = runs[(script, fmt, smoke)]
    assert returncode == 0, f"exit {returncode}:\n{out[-4000:]}"
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
