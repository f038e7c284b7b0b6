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


BACKGROUND_CHECKS = {
    # (module, test) -> (job name, its script tests/<script>.py): slow, self-contained work a test only checks
    ("test_devices.py", "test_real_torch_trainer_on_fake_gpus"): ("fake-gpus", "fake_gpus"),
    ("test_cli_train.py", "test_dqf_beats_late_fusion_on_tav_auilc_and_its_curve_does_not_rise"):
        ("dqf-vs-late-fusion", "acceptance_runs"),
}


TIMED_PAGES = {"test_dashboard_browser.py"}
"""Modules that wait on a real browser with timeouts: they run at the end, once the background work
(which starves a Streamlit app on 2 cores) is done."""


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(session, config, items):
    """Start the slow self-contained work of the selected tests in the background (tests/background.py):
    it runs on the second core (mostly waiting on process start-ups) while the rest of the suite runs.
    The tests that wait for it run near the end, so their work has had the whole session to finish."""
    if config.option.collectonly:
        return
    import background
    import study_script_runs

    waiting = [item for item in items if item.path.name == "test_study_scripts.py"
               or (item.path.name, item.name) in BACKGROUND_CHECKS]
    names = [study_script_runs.case_name(**item.callspec.params) for item in waiting if hasattr(item, "callspec")]
    if names:
        background.start(config, "study-scripts", study_script_runs.argv(names))
    for item in waiting:
        if (item.path.name, item.name) in BACKGROUND_CHECKS:
            job, job_script = BACKGROUND_CHECKS[item.path.name, item.name]
            background.start(config, job, background.script(job_script))
    last = [item for item in items if item.path.name in TIMED_PAGES]
    items[:] = [item for item in items if item not in waiting and item not in last] + waiting + last


def pytest_unconfigure(config):
    """A session that ends early (-x, Ctrl-C) stops the background work; its directories go either way."""
    import background

    background.stop_all(config)
