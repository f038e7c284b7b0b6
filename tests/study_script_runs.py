"""The study-script runs of tests/test_study_scripts.py, run by a host process in the background
(tests/background.py: conftest.py starts it when the session collects those tests).

Every studies/*_search.py runs twice, once on an MMSA and once on a MERBench fixture, one of the
two with --smoke-test; which one alternates from script to script (`MATRIX`). So every script runs
on both file layouts and with and without --smoke-test, every layout runs with and without it, and
every (script, layout) pair runs: all pairs of the three factors (a strength-2 covering array).
The full cross product (20 runs) cost about 550 CPU-seconds, a third of the suite on 2 cores, for
combinations whose code paths these 10 runs already take (a script only names its method and
defaults; the layout decides loading; --smoke-test decides budget and execution).

    python tests/study_script_runs.py NAMES_JSON WORK

The host writes the two fixtures to WORK, starts one local Ray (4 logical CPUs: the work is tiny,
one torch thread each; with 2, a smoke test's Ray Train worker group waits for the in-process
trials of the others and its start-up times out) and runs the cases (NAMES_JSON: a list of case
names, or null for all), each as a user types it (`python SCRIPT ARGS --address RAY`), RUNNERS at
a time. One process (one Ray job) per case, not several cases per interpreter: tried, a finished
smoke run's Ray Train placement group stayed reserved while its interpreter lived (3 of the 4 CPUs
after three smoke runs, and the next runs starved); a job's end frees what it left. The suite's
own `ray.init` calls are unaffected: this Ray belongs to the host process.
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
FORMATS = ("mmsa", "merbench")
MATRIX = [(script.stem, fmt, fmt == FORMATS[i % 2]) for i, script in enumerate(SCRIPTS) for fmt in FORMATS]
"""(script, layout, smoke): each script on both layouts, the smoke run alternating between them."""
TINY = ["--trials", "1", "--epochs", "1", "--train-seeds", "0", "--mask-seeds", "0", "--concurrent", "1"]
RUNNERS = 3
"""Runs at a time: more only queue for the same CPUs, and queued Ray Train worker groups time out."""
TIME_LIMIT_S = 1500
"""For all the runs together (they share the machine with the rest of the suite)."""


def case_name(script: str, fmt: str, smoke: bool) -> str:
    """The study name (and log and store name) of a case: distinct, since Tune stages concurrent
    experiments by name and would start a second one of the same name on one cluster."""
    return f"{script}-{fmt}-{'smoke' if smoke else 'full'}"


def cases(work: Path, sources: dict[str, str], address: str, names: list[str] | None) -> list[tuple[str, list[str]]]:
    """(name, command line) of the cases in `names` (or all), smoke and full ones alternating."""
    out = []
    for script, fmt, smoke in MATRIX:
        name = case_name(script, fmt, smoke)
        if names is None or name in names:
            out.append((name, [sys.executable, str(REPO / "studies" / f"{script}.py"), "--dataset", sources[fmt],
                               *TINY, "--storage", str(work / name), "--name", name, "--address", address,
                               *(["--smoke-test"] if smoke else [])]))
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
    """One Ray for the runs (those in `names`, or all), each run a `python SCRIPT ARGS` process,
    RUNNERS at a time; WORK/codes.json gets each run's exit code as it ends."""
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "90")
    # Ray's memory monitor kills workers when the whole machine is short of memory, whoever uses it:
    # on a shared machine that fails these tiny runs (~0.5 GB per process) for other people's jobs.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    import ray

    sources = write_sources(work)
    ray.init(num_cpus=4, log_to_driver=False)
    try:
        todo, running, codes = cases(work, sources, ray.get_runtime_context().gcs_address, names), {}, {}
        deadline = time.monotonic() + TIME_LIMIT_S
        while (todo or running) and time.monotonic() < deadline:
            while todo and len(running) < RUNNERS:
                name, command = todo.pop(0)
                with open(work / f"{name}.log", "w") as log:  # a file: a pipe could fill up
                    running[name] = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    codes[name] = running.pop(name).returncode
                    (work / "codes.json").write_text(json.dumps(codes))
            time.sleep(1)
        for proc in running.values():
            proc.kill()
    finally:
        ray.shutdown()


def argv(names: list[str] | None = None) -> list[str]:
    """The host's command line (tests/background.py adds the work directory) for `names` (default all)."""
    return [str(Path(__file__).resolve()), json.dumps(names)]


def collect(host_code: int | None, work: Path) -> dict:
    """case name -> (exit code, output, store root), once the host ended."""
    codes = json.loads((work / "codes.json").read_text()) if (work / "codes.json").exists() else {}
    if not codes:
        host_log = (work / "job.log").read_text(errors="replace") if (work / "job.log").exists() else ""
        raise RuntimeError(f"the study-script host ran no case (exit {host_code}):\n{host_log[-4000:]}")
    done = {}
    for log in work.glob("*.log"):
        if log.stem != "job":
            out = log.read_text(errors="replace")
            done[log.stem] = (codes.get(log.stem, f"none (not finished in {TIME_LIMIT_S} s)"), out, work / log.stem)
    return done


if __name__ == "__main__":
    host(Path(sys.argv[2]), json.loads(sys.argv[1]))
