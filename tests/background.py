"""Slow, self-contained test work started in the background when the session collects the tests
that check it (conftest.py), so it runs on the second core while the rest of the suite does.

A job is a script run in its own process session on a fresh work directory; the test that checks
it calls `job(request, name, argv)`, which waits for it (starting it first when the session did
not, e.g. under `--collect-only` plus a rerun) and returns its work directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STASH = pytest.StashKey[dict]()
"""config.stash entry: job name -> (process, work directory)."""
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
       "PYTHONDONTWRITEBYTECODE": "1"}


def script(name: str) -> list[str]:
    """The command line of the job script tests/<name>.py (`start` adds the work directory)."""
    return [str(REPO / "tests" / f"{name}.py")]


def start(config, name: str, argv: list[str]) -> None:
    """Run `python ARGV... WORK` (WORK a new directory) in its own process session, output to WORK/job.log."""
    work = Path(tempfile.mkdtemp(prefix=f"affectune-{name}-"))
    with open(work / "job.log", "w") as log:
        proc = subprocess.Popen([sys.executable, *argv, str(work)], cwd=REPO, env={**os.environ, **ENV},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    config.stash.setdefault(STASH, {})[name] = (proc, work)


def stop(proc: subprocess.Popen) -> None:
    """Stop a job and everything it started (its process group), if still running."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(grace)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def job(request, name: str, argv: list[str], timeout_s: float) -> tuple[int | None, Path]:
    """Wait for job `name` (started now if the session did not); (exit code, work directory)."""
    if name not in request.config.stash.get(STASH, {}):
        start(request.config, name, argv)
    proc, work = request.config.stash[STASH][name]
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(proc)
    return proc.returncode, work


def stop_all(config) -> None:
    """At the end of the session: stop what still runs (-x, Ctrl-C) and remove the work directories."""
    for proc, work in config.stash.get(STASH, {}).values():
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)
