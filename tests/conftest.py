"""Shared fixtures of the suite."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: intra-op threads only add contention on a shared CPU (about 10x slower here).
    train_loop's num_threads sets the same for the rest of the process; this restores the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(session, config, items):
    """Start the study-script runs as soon as the session knows it will run test_study_scripts: they
    run in the background (their own Ray, mostly waiting on process start-ups) while the rest does."""
    import study_script_runs

    names = [study_script_runs.case_name(**item.callspec.params) for item in items
             if item.path.name == "test_study_scripts.py"]
    if names and not config.option.collectonly:
        work = Path(tempfile.mkdtemp(prefix="affectune-study-scripts-"))
        config.stash[study_script_runs.STASH] = (study_script_runs.start(work, names), work)


def pytest_unconfigure(config):
    """A session that ends early (-x, Ctrl-C) stops the runs; the work directory goes either way."""
    import study_script_runs

    if study_script_runs.STASH in config.stash:
        proc, work = config.stash[study_script_runs.STASH]
        study_script_runs.stop(proc)
        shutil.rmtree(work, ignore_errors=True)
