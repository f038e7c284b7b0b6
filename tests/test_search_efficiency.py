"""ASHA's grace period (the default rule, the flag, the scheduler the study builds) and the tabular
search-efficiency benchmark's replay (benchmarks/search.py) on a hand-made table. No Ray session."""

from __future__ import annotations

import itertools

import pytest
from ray.tune.schedulers import TrialScheduler

from affectune.studies.runner import asha_scheduler
from affectune.studies.spec import StudySpec, default_grace_period


def test_default_grace_period_is_half_the_budget_at_least_two():
    assert {e: default_grace_period(e) for e in (1, 2, 4, 6, 8, 12, 20, 100)} == \
        {1: 1, 2: 2, 4: 2, 6: 3, 8: 4, 12: 6, 20: 10, 100: 50}
    assert StudySpec(name="a", method="dqf").resolved_grace_period(6) == 3
    assert StudySpec(name="a", method="dqf", grace_period=3).resolved_grace_period(6) == 3
    assert StudySpec(name="a", method="dqf", grace_period=9).resolved_grace_period(4) == 4  # never past the budget
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="grace_period must be an int >= 1 or None"):
            StudySpec(name="a", method="dqf", grace_period=bad)


class _Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def _stops(grace: int, epochs: int = 4) -> dict[str, int]:
    """Epoch at which the study's ASHA stops each of six trials run one after another, each worse
    than all before it at every epoch (the case ASHA stops most eagerly)."""
    scheduler = asha_scheduler("objective", "min", epochs, grace, 2)
    stopped = {}
    for k in range(6):
        trial = _Trial(f"t{k}")
        scheduler.on_trial_add(None, trial)
        for epoch in range(1, epochs + 1):
            action = scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "objective": 1.0 + k - 0.01 * epoch})
            if action == TrialScheduler.STOP and epoch < epochs:
                stopped[trial.trial_id] = epoch
                break
    return stopped


def test_no_trial_is_stopped_before_the_grace_period():
    # `studies/dqf_search.py --epochs 4`: default grace 2, so the earliest stop is after epoch 2
    grace = StudySpec(name="a", method="dqf").resolved_grace_period(4)
    assert grace == 2
    assert _stops(grace) == {f"t{k}": 2 for k in range(1, 6)}  # all losers, none before epoch 2
    assert _stops(1) == {f"t{k}": 1 for k in range(1, 6)}  # the old default stopped them after one epoch


def _table(epochs=4):
    """Two configs per dimension; config quality q = a + b (lower is better), curves fall to q."""
    dims = {"a": [0.0, 0.2], "b": [0.0, 0.1]}
    entries = {}
    from benchmarks.search import point_key

    for a, b in itertools.product(*dims.values()):
        for seed in (0, 1):
            curve = [1.0 - (1.0 - (0.5 + a + b)) * e / epochs + 0.01 * seed for e in range(1, epochs + 1)]
            entries[f"{point_key({'a': a, 'b': b})}|{seed}"] = {"objective": curve, "select_metric": "valmask_mae"}
    return {"dims": dims, "epochs": epochs, "train_seeds": [0, 1], "entries": entries}


def test_replay_spends_the_grid_budget_and_respects_the_grace_period():
    from benchmarks.search import replay

    table = _table()
    points = sorted(str({"a": a, "b": b}) for a, b in itertools.product([0.0, 0.2], [0.0, 0.1]))
    grid = replay(table, "grid", 1, budget=16)
    assert sorted(str(r["point"]) for r in grid["rows"]) == points  # each point once
    assert len(grid["trace"]) == 16 and grid["trace"][-1] == pytest.approx(0.51)  # best config, train seed 1
    assert grid["pick"] == {"a": 0.0, "b": 0.0}
    asha = replay(table, "tpe+asha (platform default)", 0, budget=16)
    assert asha["grace"] == 2 and all(r["epochs_run"] >= 2 for r in asha["rows"])
    # no config trains twice: once all 4 ran, the search ends, whatever budget is left
    assert sorted(str(r["point"]) for r in asha["rows"]) == points and len(asha["trace"]) <= 16
    assert all(b <= a for a, b in zip(asha["trace"], asha["trace"][1:]))  # best so far never worsens
    retrained = replay(table, "tpe+asha grace quarter, repeats retrained (second default)", 0, budget=40)
    assert len(retrained["trace"]) == 40 and len(retrained["rows"]) > 4  # without the rule: repeats, all 40 spent


def test_median_epochs_counts_a_search_that_never_reaches_the_target_as_last():
    from benchmarks.search import _median_epochs

    assert _median_epochs([30, None, 10]) == "30"  # sorted: 10, 30, never
    assert _median_epochs([None, None, 10]) == "-"  # the median search never reaches it
    assert _median_epochs([40, 20, 10, None]) == "20"  # even count: the lower middle


def _run_searcher(space, results: dict, trials: int = 6) -> tuple:
    """The configs a study's searcher starts (each finishing with objective results[str(config)]) and its Optuna study."""
    import optuna
    from ray.tune.search import Searcher

    from affectune.studies.searcher import NoRepeatOptunaSearch

    searcher = NoRepeatOptunaSearch(space=space, metric="best_objective", mode="min",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    started = []
    for k in range(trials):
        config = searcher.suggest(f"t{k}")
        if config == Searcher.FINISHED:
            break
        started.append(config)
        searcher.on_trial_complete(f"t{k}", {"best_objective": results[str(config)]})
    return started, searcher._ot_study


def test_the_searcher_never_trains_a_config_twice_and_tells_repeats_their_result():
    import optuna

    from affectune.studies.searcher import MAX_REPEATED_PROPOSALS

    def space(trial):
        layers = trial.suggest_categorical("layers", (1, 2))
        return {"hidden": 8 * layers}  # derived from the draw: part of the config

    results = {str({"layers": 1, "hidden": 8}): 0.9, str({"layers": 2, "hidden": 16}): 0.7}
    started, study = _run_searcher(space, results)
    assert sorted(map(str, started)) == sorted(results)  # both points once, then the space is exhausted
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == 2 + MAX_REPEATED_PROPOSALS  # the repeats were told, not trained
    assert all(t.value == results[str({"layers": t.params["layers"], "hidden": 8 * t.params["layers"]})]
               for t in finished)  # each told the known result of its config


def test_the_searcher_compares_whole_configs_not_only_the_drawn_params():
    # no draws at all (the params are always {}), yet the configs differ: both must train
    def alternating(trial):
        return {"lr": (1e-2, 1e-3)[trial.number % 2]}

    started, _ = _run_searcher(alternating, {str({"lr": 1e-2}): 0.8, str({"lr": 1e-3}): 0.9})
    assert started == [{"lr": 1e-2}, {"lr": 1e-3}]  # the third proposal repeats the first: never trained


def test_tpe_start_up_trials_scale_with_the_study_budget():
    from affectune.studies.runner import _sampler
    from affectune.studies.spec import default_tpe_startup_trials

    assert {n: default_tpe_startup_trials(n) for n in (1, 4, 9, 20, 40, 100)} == {1: 2, 4: 2, 9: 2, 20: 5, 40: 10, 100: 10}
    space = type("Space", (), {"grid": ()})()
    assert _sampler(space, StudySpec(name="a", method="dqf", num_trials=20))._n_startup_trials == 5
    assert _sampler(space, StudySpec(name="a", method="dqf", tpe_startup_trials=7))._n_startup_trials == 7
    with pytest.raises(ValueError, match="tpe_startup_trials must be an int >= 1 or None"):
        StudySpec(name="a", method="dqf", tpe_startup_trials=0)


def _decisions(curves: list[list[float]], grace: int, plateau_tol: float | None) -> dict[str, int]:
    """Epoch at which ASHA (as the study builds it) stops each trial of `curves`, run one after another."""
    scheduler = asha_scheduler("objective", "min", len(curves[0]), grace, 2, plateau_tol)
    stopped = {}
    for k, curve in enumerate(curves):
        trial = _Trial(f"t{k}")
        scheduler.on_trial_add(None, trial)
        for epoch, value in enumerate(curve, 1):
            if scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "objective": value}) == \
                    TrialScheduler.STOP and epoch < len(curve):
                stopped[trial.trial_id] = epoch
                break
    return stopped


def test_plateau_rule_waits_for_evidence_then_stops_the_trial_that_is_behind():
    on_plateau = [[1.00, 0.99, 1.00, 0.99], [1.00, 1.01, 1.00, 1.01], [1.01, 1.02, 1.02, 1.02]]
    assert _decisions(on_plateau, 1, None) == {"t1": 2, "t2": 1}  # plain ASHA cuts on 0.01 of noise
    assert _decisions(on_plateau, 1, 0.05) == {}  # nobody left the plateau (5%): no evidence, no stop
    learns_then_stuck = [[1.00, 0.80, 0.60, 0.50], [1.01, 0.99, 1.00, 0.99], [1.00, 0.70, 0.55, 0.45]]
    # epoch 1 counts for nobody (no trial can have left yet); at epoch 2 t0 has left (0.80 < 0.95), so
    # the stuck t1 is compared there and stopped; t2 has left too and continues
    assert _decisions(learns_then_stuck, 1, 0.05) == {"t1": 2}
    assert _decisions(learns_then_stuck, 1, None) == {"t1": 1}
    # a trial on the plateau after others left is behind: compared at the first rung with evidence
    late = [[1.00, 0.80, 0.60, 0.50], [1.00, 1.00, 0.70, 0.60]]
    assert _decisions(late, 1, 0.05) == {"t1": 2}
    with pytest.raises(ValueError, match="plateau_tol must be >= 0"):
        StudySpec(name="a", method="dqf", plateau_tol=-0.1)


def test_every_tabulated_space_is_a_sub_grid_of_its_registered_space():
    # a value outside the registered range or choices (Optuna's own FixedTrial warns) or a missing
    # param would tabulate configs a study of that space could never run
    import warnings

    import optuna

    from affectune.search_spaces import get_space
    from benchmarks.search import SPACES, _train_config

    assert {"dqf-wide", "umdf-distill", "mculora-wide"} <= set(SPACES)
    for space in SPACES.values():
        registered = get_space(space.method, space.name)
        for point in space.points():
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                registered.define(optuna.trial.FixedTrial(point))
            config = _train_config(space, point, seed=1)
            assert (config["model"], config["epochs"], config["seed"]) == (space.method, space.epochs, 1)
            drawn = {**config["model_config"], **{k: v for k, v in config.items() if k != "model_config"}}
            params = {k: v for k, v in point.items() if k not in registered.helpers}
            assert {k: drawn[k] for k in params} == params  # helpers (e.g. DQF's head_dim) only derive others
    mculora = _train_config(SPACES["mculora-wide"], SPACES["mculora-wide"].points()[0], seed=0)
    assert mculora["model_config"]["dpft_min_prob"] == pytest.approx(0.5 / 7)  # clip 0.5 -> [(1 - c)/7, (1 + c)/7]
    assert mculora["model_config"]["dpft_max_prob"] == pytest.approx(1.5 / 7)
