"""Hyper-parameter studies on Ray: StudySpec -> run_study (Tune + Optuna + ASHA, Train per trial)."""

from affectune.studies.spec import StudySpec  # noqa: F401
from affectune.studies.runner import (  # noqa: F401
    StudyExists, StudyResult, init_ray, pareto_front, run_study, select_trials,
)
from affectune.studies.trial import SearchView, TestSplitAccess, search_view  # noqa: F401
