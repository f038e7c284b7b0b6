"""Every study script (studies/*_search.py) runs as a user types it on MMSA- and MERBench-format
files, with and without --smoke-test, tiny budgets; the summary, the store and the flags agree.

Which runs: tests/study_script_runs.py `MATRIX` (every script on both layouts, one of the two runs
with --smoke-test, alternating; all pairs of script, layout and smoke are covered). The runs happen
in tests/study_script_runs.py (one Ray for all of them, a few runs at a time),
started by conftest.py when the session collects this module so that they run in
the background while the rest of the suite does (tests/background.py); here they are waited for
and checked.
"""

from __future__ import annotations

import json

import pytest

import background
import study_script_runs
from affectune.store import open_store
from study_script_runs import FORMATS, MATRIX, SCRIPTS, case_name

pytestmark = pytest.mark.cluster  # tests/shards.py runs these beside the rest


@pytest.fixture(scope="module")
def runs(request) -> dict:
    """case name -> (exit code, output, store root), from the background runs."""
    code, work = background.job(request, "study-scripts", study_script_runs.argv(),
                                timeout_s=study_script_runs.TIME_LIMIT_S + 120)
    return study_script_runs.collect(code, work)


def test_the_runs_cover_every_pair_of_script_layout_and_smoke():
    pairs = lambda i, j: {(case[i], case[j]) for case in MATRIX}  # noqa: E731
    scripts, modes = [s.stem for s in SCRIPTS], (True, False)
    assert len(scripts) >= 2 and len(MATRIX) == len(set(MATRIX)) == 2 * len(scripts)
    assert pairs(0, 1) == {(s, f) for s in scripts for f in FORMATS}
    assert pairs(0, 2) == {(s, m) for s in scripts for m in modes}
    assert pairs(1, 2) == {(f, m) for f in FORMATS for m in modes}


@pytest.mark.parametrize("script,fmt,smoke", MATRIX, ids=[case_name(*case) for case in MATRIX])
def test_study_script_runs_on_user_files(runs, script, fmt, smoke):
    name = case_name(script, fmt, smoke)
    returncode, out, store = runs[name]
    assert returncode == 0, f"exit {returncode}:\n{out[-4000:]}"
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
    if smoke:  # a Ray Train trial (--smoke-test forces it): the row names the worker's device
        assert trials["device"].tolist() == ["cpu"] and trials["device_name"].iloc[0]
