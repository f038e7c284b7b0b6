"""Shared fixtures of the suite."""

from __future__ import annotations

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
    """Start the slow self-contained work of the selected tests in the background (tests/background.py):
    it runs on the second core (mostly waiting on process start-ups) while the rest of the suite runs."""
    if config.option.collectonly:
        return
    import background
    import study_script_runs

    names = [study_script_runs.case_name(**item.callspec.params) for item in items
             if item.path.name == "test_study_scripts.py" and hasattr(item, "callspec")]
    if names:
        background.start(config, "study-scripts", study_script_runs.argv(names))
    if any(item.path.name == "test_devices.py" and item.name == "test_real_torch_trainer_on_fake_gpus"
           for item in items):
        background.start(config, "fake-gpus", [str(background.REPO / "tests" / "fake_gpus.py")])


def pytest_unconfigure(config):
    """A session that ends early (-x, Ctrl-C) stops the background work; its directories go either way."""
    import background

    background.stop_all(config)
