"""The 20 study-script runs of tests/test_study_scripts.py (every studies/*_search.py on an MMSA
and a MERBench fixture, with and without --smoke-test), run by a host process in the background
(tests/background.py: conftest.py starts it when the session collects those tests).

    python tests/study_script_runs.py NAMES_JSON WORK

The host writes the two fixtures to WORK, starts one local Ray (4 logical CPUs: the work is tiny,
one torch thread each; with 2, a smoke test's Ray Train worker group waits for the in-process
trials of the others and its start-up times out) and runs the cases (NAMES_JSON: a list of case
names, or null for all) in RUNNERS runner interpreters (tests/run_scripts.py: each runs its share
of the scripts one after another, each as `python SCRIPT ARGS` would, so torch, Ray and a Ray job
start once per runner, not once per case). The suite's own `ray.init` calls are unaffected: this
Ray belongs to the host process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(REPO.glob("studies/*_search.py"))
"""Every method's study script: a new method's script is covered without editing anything."""
CASES = [(fmt, smoke) for fmt in ("mmsa", "merbench") for smoke in (True, False)]
TINY = ["--trials", "1", "--epochs", "1", "--train-seeds", "0", "--mask-seeds", "0", "--concurrent", "1"]
RUNNERS = 4
"""Runner processes at a time: more only queue for the same CPUs, and queued Ray Train worker groups time out."""
TIME_LIMIT_S = 1500
"""For all the runs together (they share the machine with the rest of the suite)."""


def case_name(script: str, fmt: str, smoke: bool) -> str:
    """The study name (and log and store name) of a case: distinct, since Tune stages concurrent
    experiments by name and would start a second one of the same name on one cluster."""
    return f"{script}-{fmt}-{'smoke' if smoke else 'full'}"


def shares(work: Path, sources: dict[str, str], address: str, names: list[str] | None) -> list[list[dict]]:
    """The cases (those in `names`, or all) dealt to the runners: script k's case c goes to runner
    (k + c) % RUNNERS, so every runner gets a mix of smoke and full cases."""
    out: list[list[dict]] = [[] for _ in range(RUNNERS)]
    for k, script in enumerate(SCRIPTS):
        for c, (fmt, smoke) in enumerate(CASES):
            name = case_name(script.stem, fmt, smoke)
            if names is not None and name not in names:
                continue
            argv = [str(script), "--dataset", sources[fmt], *TINY, "--storage", str(work / name), "--name", name,
                    "--address", address, *(["--smoke-test"] if smoke else [])]
            out[(k + c) % RUNNERS].append({"argv": argv, "log": str(work / f"{name}.log")})
    return out


def write_sources(root: Path) -> dict[str, str]:
    """Small files in the two user-file layouts (the loaders' own test fixtures)."""
    import numpy as np
    from test_data_loaders import write_mmsa, write_merbench

    write_mmsa(root / "aligned_50.pkl", True, np.random.default_rng(0))
    (root / "merbench").mkdir()
    write_merbench(root / "merbench", np.random.default_rng(1))
    return {"mmsa": f"mmsa:{root / 'aligned_50.pkl'}", "merbench": f"merbench:{root / 'merbench'}"}


def host(work: Path, names: list[str] | None = None) -> None:
    """One Ray for the runs (those in `names`, or all), the runners on it, then Ray stops."""
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "90")
    # Ray's memory monitor kills workers when the whole machine is short of memory, whoever uses it:
    # on a shared machine that fails these tiny runs (~0.5 GB per process) for other people's jobs.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    import ray

    sources = write_sources(work)
    ray.init(num_cpus=4, log_to_driver=False)
    try:
        procs = []
        for i, share in enumerate(shares(work, sources, ray.get_runtime_context().gcs_address, names)):
            if not share:
                continue
            (work / f"cases{i}.json").write_text(json.dumps(share))
            with open(work / f"runner{i}.log", "w") as log:  # the runner's own errors, if any
                procs.append(subprocess.Popen([sys.executable, str(REPO / "tests" / "run_scripts.py"),
                                               str(work / f"cases{i}.json"), str(work / f"codes{i}.json")],
                                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + TIME_LIMIT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        ray.shutdown()


def argv(names: list[str] | None = None) -> list[str]:
    """The host's command line (tests/background.py adds the work directory) for `names` (default all)."""
    return [str(Path(__file__).resolve()), json.dumps(names)]


def collect(host_code: int | None, work: Path) -> dict:
    """(script stem, format, smoke) case name -> (exit code, output, store root), once the host ended."""
    done = {}
    for i in range(RUNNERS):
        cases_file, codes_file = work / f"cases{i}.json", work / f"codes{i}.json"
        cases = json.loads(cases_file.read_text()) if cases_file.exists() else []
        codes = json.loads(codes_file.read_text()) if codes_file.exists() else []
        runner_log = work / f"runner{i}.log"
        for j, case in enumerate(cases):
            log = Path(case["log"])
            out = log.read_text(errors="replace") if log.exists() else ""
            code = codes[j] if j < len(codes) else f"none: {runner_log.read_text(errors='replace')[-2000:]}"
            done[log.stem] = (code, out, Path(case["argv"][case["argv"].index("--storage") + 1]))
    if not done:
        host_log = (work / "job.log").read_text(errors="replace") if (work / "job.log").exists() else ""
        raise RuntimeError(f"the study-script host ran no case (exit {host_code}):\n{host_log[-4000:]}")
    return done


if __name__ == "__main__":
    host(Path(sys.argv[2]), json.loads(sys.argv[1]))
