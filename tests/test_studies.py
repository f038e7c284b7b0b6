"""Studies on Ray: Train-in-Tune with 2 workers, ASHA stops without hangs, failures, resume, test isolation.

One Ray session for the module (2 logical CPUs). Run under `flock /tmp/affectune-ray.lock`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "90")

import ray  # noqa: E402  (after the environment above: Ray reads it at import)

from affectune.data import load  # noqa: E402
from affectune.store import open_store  # noqa: E402
from affectune.studies import StudySpec, TestSplitAccess, pareto_front, run_study, search_view, select_trials  # noqa: E402
from affectune.studies.trial import TrialContext, run_worker  # noqa: E402
from ray_start import start_ray  # noqa: E402

pytestmark = pytest.mark.cluster  # tests/shards.py runs these beside the rest

DATASET = "synthetic:mosi?scale=0.03"
BASE = {"epochs": 2, "batch_size": 16, "patience": 5, "model_config": {"hidden": 12}}


@pytest.fixture(scope="module")
def ray_session():
    start_ray(num_cpus=2, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


LEARNS_STUCK_LEARNS = (1e-2, 1e-7, 8e-3)


def learner_then_stuck(trial):
    """Trial i gets lr LEARNS_STUCK_LEARNS[i] (a fixed order, not a draw): lr 1e-7 leaves the model
    at its initial objective while 1e-2 learns, so at ASHA's rung after epoch 3 the second trial is
    clearly worse than the first and is stopped; the third, another learner (8e-3: a repeat of the
    first config would be told its result, not trained), starts after the stop. Batches of 4 give
    the learner ~15 steps per worker by the rung (valmask MAE after epoch 3, seed 3: 1.28 with 2
    workers, 1.22 in process, against 1.56 for the stuck model)."""
    return {"lr": LEARNS_STUCK_LEARNS[trial.number % len(LEARNS_STUCK_LEARNS)]}


def one_layer_space(trial):
    """A one-point space: the base config's learning rate stays."""
    trial.suggest_categorical("layers", (1,))


def failing_space(trial):
    """Half the draws carry an invalid learning rate: those trials raise in every attempt."""
    trial.suggest_categorical("layers", (1, 2))
    if trial.suggest_categorical("broken", (0, 1)):
        return {"lr": -1.0}
    return None


failing_space.helpers = ("broken",)  # drawn, but not a config key


def _spec(tmp_path, name, **kw):
    defaults = dict(name=name, method="dqf", dataset=DATASET, base_config=dict(BASE), storage=str(tmp_path / "store"),
                    mask_seeds=(0,), train_seeds=(0,), verbose=0, seed=3)
    return StudySpec(**{**defaults, **kw})


def test_search_view_hides_test_but_keeps_the_fingerprint():
    ds = load(DATASET)
    view = search_view(ds)
    assert sorted(view.splits) == ["train", "valid"] and view.fingerprint == ds.fingerprint
    with pytest.raises(TestSplitAccess, match="not visible during the search"):
        view.splits["test"]


def test_worker_refuses_a_dataset_with_test(ray_session):
    ds = load(DATASET)
    ctx = TrialContext(study="s", method="dqf", dataset_source=DATASET, fingerprint="f", code_version="c",
                       store_root="/tmp/unused-store", base_config={}, helpers=(),
                       objectives=(("objective", "min"),), execution="in_process", workers=1,
                       gpus_per_worker=0, cpus_per_worker=1, resources_per_worker={}, tune_storage="/tmp", seed=0)
    worker_config = {"ctx": ctx, "config": {"model": "dqf", "dataset": DATASET}, "params": {}, "trial_id": "t",
                     "started": time.time(), "attempts": 1, "num_parameters": 1,
                     "dataset_ref": [ray.put(ds)], "artifact_name": "t"}
    with pytest.raises(RuntimeError, match="validation-only view"):
        run_worker(worker_config)


def test_selection_by_validation_top_k_and_pareto():
    import pandas as pd

    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "status": ["completed", "completed", "stopped", "failed"],
                           "best_objective": [0.9, 0.7, 0.5, np.nan], "best_num_parameters": [10.0, 5.0, 1.0, np.nan]})
    selected, front = select_trials(trials, (("objective", "min"),), top_k=1)
    assert selected == ["b"]  # min among completed; stopped only when nothing completed
    sel2, front2 = select_trials(trials, (("objective", "max"), ("num_parameters", "min")), top_k=1)
    assert sel2 == front2 == ["a", "b"]  # a: best objective, b: fewer parameters; neither dominates
    values = np.array([[1.0, 1.0], [2.0, 0.5], [0.5, 0.5], [2.0, 2.0]])
    assert pareto_front(values, ["max", "min"]).tolist() == [False, True, False, False]


def test_train_in_tune_two_workers_asha_stops_and_later_trials_start(ray_session, tmp_path):
    """2 Ray Train workers per trial on CPU; ASHA stops the loser mid-training; no placement-group hang."""
    # One trial at a time: ASHA's rung decision then depends on the configs only, not on which of two
    # concurrent trials reports first; the stopped trial must still free its workers for the next.
    # grace_period is set (not the spec default): the rung must be at epoch 3, where the learner is
    # clearly ahead (at epochs 1-2 an untrained model can still score better than a learning one).
    # 6 epochs: ASHA's STOP reaches the Train workers asynchronously (they keep training meanwhile), so
    # with only one epoch after the rung the loser could finish (and be recorded completed) first.
    spec = _spec(tmp_path, "e2e-train", search_space=learner_then_stuck, num_trials=3, max_concurrent=1,
                 workers_per_trial=2, cpus_per_worker=0.5, execution="train", grace_period=3, reduction_factor=2,
                 base_config={**BASE, "epochs": 6, "batch_size": 4}, train_seeds=(3,))
    started = time.time()
    result = run_study(spec)
    # A placement-group hang would show as a worker-group start timeout (90 s here) and a failed trial;
    # the bound only catches a hang that times out nowhere (generous: the shared 2-core host is often loaded).
    assert time.time() - started < 900
    trials = result.trials
    assert len(trials) == 3 and trials["trial_id"].is_unique
    lrs = [json.loads(p)["lr"] for p in trials["params"]]
    stopped = trials[trials["status"] == "stopped"]
    assert [lr for lr, s in zip(lrs, trials["status"]) if s == "stopped"] == [1e-7], trials[  # the loser, only
        ["params", "status", "learning_curve"]].to_dict("records")
    assert stopped["epochs_run"].between(3, 5).all()  # stopped mid-training by ASHA, at its rung (+ the lag)
    curves = {t: {e["epoch"]: e["objective"] for e in (json.loads(c) if isinstance(c, str) else c)}
              for t, c in zip(trials["trial_id"], trials["learning_curve"])}
    for trial_id, last in zip(stopped["trial_id"], stopped["epochs_run"]):  # ASHA stops losers only
        others = [c[last] for t, c in curves.items() if t != trial_id and last in c]
        assert others and curves[trial_id][last] > min(others), (trial_id, curves)
    completed = trials[trials["status"] == "completed"]
    assert len(completed) == 2 and (completed["epochs_run"] == 6).all()  # the third started after the stop
    assert trials["node_id"].notna().all()
    # The objective (valmask MAE, min) of the selected trial is the best among completed ones.
    assert result.selected == [completed.sort_values("best_objective")["trial_id"].iloc[0]]
    # Lineage on every row; the test grid for the selected config, in the store.
    ds_fp = load(DATASET).fingerprint
    assert (trials["fingerprint"] == ds_fp).all() and (trials["method"] == "dqf").all()
    store = open_store(spec.storage)
    summary = store.summary("e2e-train")
    assert set(summary["trial_id"]) == set(result.selected)
    assert set(summary["subset"]) == {"v", "a", "t", "av", "tv", "ta", "tav"}
    curves = store.curves("e2e-train")
    # eval_splits defaults to test plus the dataset's ood split; the summary carries the split too
    assert set(curves["split"]) == {"test", "ood"} and (curves["fingerprint"] == ds_fp).all()
    assert set(summary["split"]) == {"test", "ood"} and set(result.summary["split"]) == {"test", "ood"}
    # The search never reported anything about test: no metric key in any learning curve mentions it.
    keys = {k for curve in trials["learning_curve"] for epoch in json.loads(curve) for k in epoch}
    assert keys and not [k for k in keys if "test" in k]
    assert not [c for c in trials.columns if "test" in c]
    assert store.trials("e2e-train")["selected"].sum() == 1


def test_failing_trials_are_retried_then_recorded_and_concurrent_rows_are_not_lost(ray_session, tmp_path):
    spec = _spec(tmp_path, "failing", search_space=failing_space, num_trials=4, max_concurrent=4,
                 cpus_per_worker=0.5, max_failures=1, use_asha=False, base_config={**BASE, "epochs": 1},
                 objectives=(("valmask_mae", "min"), ("num_parameters", "min")))
    result = run_study(spec)
    trials = result.trials
    assert len(trials) == 4 and trials["trial_id"].is_unique  # 4 concurrent writers lost nothing
    broken = trials[[json.loads(p).get("broken") == 1 for p in trials["params"]]]
    fine = trials.drop(broken.index)
    assert len(broken) >= 1 and len(fine) >= 1
    assert (broken["status"] == "failed").all()
    assert (broken["attempts"] == 2).all()  # one retry (max_failures=1), then recorded as failed
    assert broken["error"].str.contains("lr must be > 0").all()
    assert (fine["status"] == "completed").all()
    # multi-objective: the selected set is the Pareto set of the completed trials, on validation values
    vals = fine[["best_valmask_mae", "best_num_parameters"]].to_numpy(dtype=float)
    expect = sorted(fine["trial_id"][pareto_front(vals, ["min", "min"])])
    assert result.selected == expect
    assert sorted(open_store(spec.storage).trials("failing").query("pareto")["trial_id"]) == expect


def test_early_stopping_fires_in_a_study_whose_patience_is_shorter_than_its_epochs(ray_session, tmp_path, capfd):
    """The loop's own stop decision ends the trial: a learning rate too small to change float32
    weights leaves the objective flat, so patience 1 stops epoch 2 of 5; the row is "completed"
    (not a provisional "stopped") with its checkpoint, and eval_splits=("test",) skips ood.
    The space has one point, so the 2 more trials asked for would repeat it: the search ends instead."""
    spec = _spec(tmp_path, "patience", search_space=one_layer_space, num_trials=3, max_concurrent=1, use_asha=False,
                 base_config={**BASE, "epochs": 5, "patience": 1, "lr": 1e-12}, eval_splits=("test",))
    result = run_study(spec)
    assert "the search space is exhausted, no more trials start" in capfd.readouterr().out
    (row,) = result.trials.to_dict("records")
    assert row["status"] == "completed" and row["epochs_run"] == 2 and row["best_epoch"] == 1
    assert isinstance(row["checkpoint_path"], str)
    assert set(result.curves["split"]) == {"test"}


RESUME_SCRIPT = """
import json, sys
from affectune.studies import StudySpec, run_study
spec = StudySpec(**json.loads(sys.argv[1]))
run_study(spec, address=sys.argv[2])
"""


def test_interrupted_study_resumes_to_the_full_count_without_duplicates(ray_session, tmp_path):
    kwargs = dict(name="resumable", method="dqf", dataset=DATASET, search_space="paper", num_trials=4,
                  max_concurrent=1, base_config={**BASE, "epochs": 1}, storage=str(tmp_path / "store"),
                  mask_seeds=[0], train_seeds=[0], verbose=0, seed=1, use_asha=False)
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, json.dumps(kwargs), ray_session],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    store = open_store(kwargs["storage"])
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = store.trials("resumable")
        if (done["status"] == "completed").sum() >= 2 if len(done) else False:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGINT)  # Tune saves its state and stops
    out = proc.communicate(timeout=120)[0]
    before = store.trials("resumable")
    finished = before[before["status"] == "completed"]
    assert 2 <= len(finished) < 4, out[-3000:]

    result = run_study(StudySpec(**kwargs), resume=True)
    after = result.trials
    assert len(after) == 4 and after["trial_id"].is_unique  # full count, no duplicates
    assert (after["status"] == "completed").all()
    # the paper grid (Table 5's 5 points) is larger than the budget: every trial tried a different point,
    # across the interruption too (the restored searcher remembers what was taken)
    assert after["params"].map(lambda p: tuple(sorted(json.loads(p).items()))).is_unique
    for t in finished["trial_id"]:  # finished trials were not run again: same attempt, same wall time
        row = after.set_index("trial_id").loc[t]
        assert row["attempts"] == 1 and row["wall_time_s"] == finished.set_index("trial_id").loc[t, "wall_time_s"]
    assert len(result.selected) == 1 and not result.interrupted


# ----------------------------------------------------------------------------- no Ray needed below
def test_sampler_tries_each_point_of_a_small_grid_once_and_is_tpe_otherwise():
    import optuna

    from affectune.search_spaces import get_space
    from affectune.studies.runner import _sampler

    grid, wide = get_space("dqf", "grid"), get_space("dqf", "wide")
    spec = lambda n: StudySpec(name="s", method="dqf", num_trials=n, seed=3)  # noqa: E731
    assert isinstance(_sampler(grid, spec(9)), optuna.samplers.BruteForceSampler)
    assert isinstance(_sampler(grid, spec(10)), optuna.samplers.TPESampler)  # repeats unavoidable
    assert isinstance(_sampler(wide, spec(6)), optuna.samplers.TPESampler)
    study = optuna.create_study(sampler=_sampler(grid, spec(9)))
    study.optimize(lambda t: float(len(str(grid.define(t)))), n_trials=9)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 9


def test_a_budget_larger_than_a_grid_runs_each_point_once(capsys):
    from affectune.search_spaces import get_space
    from affectune.studies.runner import trial_budget

    paper, wide = get_space("dqf", "paper"), get_space("dqf", "wide")
    spec = lambda n: StudySpec(name="s", method="dqf", num_trials=n, seed=3)  # noqa: E731
    assert trial_budget(spec(6), paper).num_trials == len(paper.grid) == 5
    assert "space 'paper' has 5 points: running 5 trials, each point once (asked for 6)" in capsys.readouterr().out
    assert trial_budget(spec(4), paper).num_trials == 4 and trial_budget(spec(40), wide).num_trials == 40


def test_dqf_spaces_table5_grid_and_wide_draws_are_valid_configs():
    import pickle

    import optuna

    from affectune.models import make_config
    from affectune.search_spaces import apply_params, draw, get_space, list_spaces

    assert {("dqf", "paper"), ("dqf", "grid"), ("dqf", "wide")} <= set(list_spaces("dqf"))
    paper = get_space("dqf", "paper")
    pairs = sorted((p["layers"], p["heads"]) for p in (draw(paper, g) for g in paper.grid))
    assert pairs == [(2, 2), (2, 4), (4, 4), (6, 4), (6, 6)]  # Table 5
    # Tune pickles the searcher with its space: the grid function survives it
    assert pickle.loads(pickle.dumps(paper.define))(optuna.trial.FixedTrial(paper.grid[0])) == {"layers": 2, "heads": 2}
    cfg = apply_params("dqf", draw(paper, {"grid_point": "layers=4,heads=4"}),
                       {"model_config": {"hidden": 24}, "lr": 1e-3}, paper.helpers)
    assert cfg["model_config"] == {"hidden": 24, "layers": 4, "heads": 4} and cfg["lr"] == 1e-3
    wide = get_space("dqf", "wide")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):  # every draw is a valid DQF config and a valid train config
        trial = study.ask()
        derived = wide.define(trial) or {}
        cfg = apply_params("dqf", {**trial.params, **derived}, {}, wide.helpers)
        model_cfg = make_config("dqf", cfg["model_config"])
        assert model_cfg.hidden % model_cfg.heads == 0 and "head_dim" not in cfg
        assert 1e-4 <= cfg["lr"] <= 3e-2
        study.tell(trial, 0.0)
    with pytest.raises(KeyError, match="no search space 'nope'"):
        get_space("dqf", "nope")


def test_study_spec_checks_its_fields(tmp_path):
    with pytest.raises(ValueError, match="name must match"):
        StudySpec(name="a b", method="dqf")
    with pytest.raises(ValueError, match="must not set 'seed'"):
        StudySpec(name="a", method="dqf", base_config={"seed": 1})
    with pytest.raises(ValueError, match="in_process' runs one worker"):
        StudySpec(name="a", method="dqf", execution="in_process", workers_per_trial=2)
    with pytest.raises(ValueError, match="mode must be"):
        StudySpec(name="a", method="dqf", objectives=[("val_mae", "lowest")])
    assert StudySpec(name="a", method="dqf").resolved_execution == "in_process"
    assert StudySpec(name="a", method="dqf", workers_per_trial=2).resolved_execution == "train"
    assert StudySpec(name="a", method="dqf", gpus_per_worker=1).resolved_execution == "train"
    spec = StudySpec(name="a", method="dqf", storage=str(tmp_path))
    assert spec.tune_storage == os.path.join(str(tmp_path), "ray")


def test_cli_flags_build_the_spec():
    from affectune.models import model_class
    from affectune.studies.cli import build_parser, spec_from_args

    parser = build_parser("dqf", "d", {"synthetic_scale": 0.25})
    args = parser.parse_args(["--smoke-test", "--workers-per-trial", "2", "--worker-resources", '{"node2": 1}',
                              "--objective", "valmask_mae", "--objective", "num_parameters:min", "--samples", "500"])
    spec = spec_from_args("dqf", args)
    assert spec.num_trials == 3 and spec.base_config["epochs"] == 1 and spec.name == "dqf-smoke"
    assert spec.resources_per_worker == {"node2": 1} and spec.resolved_execution == "train"
    assert spec.objectives == (("valmask_mae", None), ("num_parameters", "min"))
    assert spec.dataset == f"synthetic:mosi?scale={500 / (1284 + 229 + 686):.4g}"
    # a 1-worker smoke test still goes through Ray Train; an explicit --execution is honoured
    assert spec_from_args("dqf", parser.parse_args(["--smoke-test"])).resolved_execution == "train"
    assert spec_from_args("dqf", parser.parse_args(["--smoke-test", "--execution", "in_process"])
                          ).resolved_execution == "in_process"
    assert spec_from_args("dqf", parser.parse_args([])).resolved_execution == "in_process"
    assert spec_from_args("dqf", parser.parse_args([])).grace_period is None  # default_grace_period(epochs)
    assert spec_from_args("dqf", parser.parse_args(["--grace-period", "3"])).grace_period == 3
    flagged = spec_from_args("dqf", parser.parse_args(["--plateau-tol", "0.05", "--tpe-startup-trials", "4"]))
    assert (flagged.plateau_tol, flagged.tpe_startup_trials) == (0.05, 4)
    with pytest.raises(SystemExit):
        parser.parse_args(["--worker-resources", "[1]"])


def test_cli_takes_spaces_presets_and_base_config_from_the_method(capsys):
    from affectune.models import model_class
    from affectune.search_spaces import list_spaces
    from affectune.studies.cli import build_parser, spec_from_args

    dqf = model_class("dqf")
    parser = build_parser("dqf", "d", {"synthetic_scale": 0.25})
    space = next(a for a in parser._actions if a.dest == "space")
    assert space.choices == [n for _, n in list_spaces("dqf")] and space.default == "paper"
    plain = spec_from_args("dqf", parser.parse_args([]))
    assert plain.base_config == {**dqf.study_defaults, "model_config": dict(dqf.study_defaults["model_config"])}
    assert plain.dataset == "synthetic:mosi?scale=0.25" and plain.train_seeds == (0, 1)
    # flags override the method's defaults; --patience passes through (no max(2, epochs))
    spec = spec_from_args("dqf", parser.parse_args(["--epochs", "5", "--patience", "1", "--hidden", "12",
                                                    "--set", "dropout=0.2", "--train-seeds", "3"]))
    assert spec.base_config["epochs"] == 5 and spec.base_config["patience"] == 1
    assert spec.base_config["model_config"] == {"hidden": 12, "dropout": 0.2} and spec.train_seeds == (3,)
    paper = spec_from_args("dqf", parser.parse_args(["--preset", "paper", "--smoke-test"]))
    assert paper.base_config["lr"] == dqf.preset("paper")["lr"] and paper.base_config["optimizer"] == "sgd"
    assert paper.base_config["epochs"] == 1  # the smoke test's budget wins over the preset's 100
    # file sources: no scale is appended (the old default --scale broke them), with or without the smoke test
    for extra in ([], ["--smoke-test"]):
        user = spec_from_args("dqf", parser.parse_args(["--dataset", "mmsa:/data/aligned_50.pkl", *extra]))
        assert user.dataset == "mmsa:/data/aligned_50.pkl"
    with pytest.raises(SystemExit, match="synthetic datasets only"):
        spec_from_args("dqf", parser.parse_args(["--dataset", "merbench:/d", "--scale", "0.5"]))
    # --eval-seeds is the old spelling of --train-seeds (it never meant mask seeds here)
    assert parser.parse_args(["--eval-seeds", "4"]).train_seeds == (4,)
    assert "--eval-seeds is deprecated; use --train-seeds" in capsys.readouterr().err
    assert spec_from_args("dqf", parser.parse_args(["--eval-splits", "ood"])).eval_splits == ("ood",)


def test_a_second_run_of_an_existing_study_is_refused_before_ray_starts(tmp_path, capsys):
    from affectune.studies.cli import study_main

    store = open_store(str(tmp_path))
    store.write_trial("taken", {"trial_id": "t1", "status": "completed", "params": {}, "config": {},
                                "seed": 0, "epochs_run": 1, "wall_time_s": 1.0, "num_parameters": 1,
                                "method": "dqf", "dataset": DATASET, "fingerprint": "fp",
                                "code_version": "0"})
    with pytest.raises(SystemExit) as exc:
        study_main("dqf", "d", argv=["--name", "taken", "--storage", str(tmp_path),
                                                "--dataset", DATASET])
    assert "already has 1 trials" in str(exc.value) and "--resume" in str(exc.value)
    assert len(open_store(str(tmp_path)).trials("taken")) == 1  # nothing overwritten


def test_comparison_trains_every_method_and_seed_and_stores_tables_with_lineage(ray_session, tmp_path):
    """Two methods x two seeds through run_comparison on the module's Ray: one store comparison."""
    from affectune.compare import ComparisonSpec, run_comparison

    configs = {"late_fusion": {"epochs": 1, "batch_size": 16, "model_config": {"hidden": 8}},
               "mult": {"epochs": 1, "batch_size": 16, "model_config": {"hidden": 8}}}
    spec = ComparisonSpec(name="cmp", dataset=DATASET, configs=configs, train_seeds=(0, 1), n_boot=100,
                          sources={"late_fusion": {"source": "study", "study": "lf-search", "trial_id": "t1"}},
                          run={"storage": str(tmp_path / "store"), "verbose": 0})
    result = run_comparison(spec, address=ray_session)
    store = open_store(str(tmp_path / "store"))
    runs = store.comparison_runs("cmp")
    assert sorted(zip(runs["method"], runs["train_seed"])) == [("late_fusion", 0), ("late_fusion", 1),
                                                                ("mult", 0), ("mult", 1)]
    assert set(runs.loc[runs["method"] == "late_fusion", "source_study"]) == {"lf-search"}
    assert (runs["best_epoch"] == 1).all() and runs["val_mae"].notna().all()
    row = store.comparisons("cmp").iloc[0]
    assert json.loads(row["sources"])["mult"] == {"source": "given"} and json.loads(row["splits"]) == ["test", "ood"]
    tables, sig = store.comparison_tables("cmp"), store.comparison_significance("cmp")
    assert set(tables["table"]) == {"auilc", "inter"} and (tables["n_seeds"] == 2).all()
    headline = tables[(tables["table"] == "auilc") & (tables["subset"] == "tav") & (tables["metric"] == "mae")
                      & (tables["split"] == "test")]
    best = headline.loc[headline["mean"].idxmin(), "method"]
    test_sig = sig[sig["split"] == "test"].set_index("method")
    assert (test_sig["reference"] == best).all() and test_sig["bootstrap_p"].between(0, 1).sum() == 1
    # the stored curves are the ones the tables were built from
    assert len(store.comparison_curves("cmp")) == len(result.curves)
    with pytest.raises(Exception, match="already in"):
        run_comparison(spec, address=ray_session)
