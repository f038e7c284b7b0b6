"""run_study: the search on Ray Tune (Optuna TPE + ASHA), selection on validation, final evaluation.

    result = run_study(StudySpec(name="my-study", method="<model>", dataset="synthetic:mosi?scale=0.1"))

Phases:
1. search: Tune runs `num_trials` trials proposed by OptunaSearch (TPE, seeded, its random start-up
   scaled with the budget; each point once on a finite grid no larger than the budget; a config that
   already finished is never trained again, `searcher.NoRepeatOptunaSearch`), ASHA stops
   poor ones on the first objective per epoch (after the grace period; optionally the plateau rule);
   each trial trains with Ray Train (or inside the trial for 1-worker CPU trials, see
   StudySpec.execution) on the validation-only view of the dataset and writes its own store row.
2. selection on validation only: the top_k trials by the first objective (single objective) or
   the Pareto set (several objectives), from the store's trial rows.
3. final evaluation: each selected config is trained with every train seed (the search run is
   reused for the search seed), and every resulting model is evaluated once on the robustness grid
   of each eval split (StudySpec.eval_splits: test, plus ood when the dataset has it); curves and
   AUILC summary, both with a `split` column, go to the store with lineage.

run_study reads as its steps: _open_store_for -> init_ray -> _prepare -> _search -> _select ->
_evaluate_selected (_plan_runs, _retrain, _test_grids, _store_grid).

What Optuna learns from a trial ASHA stopped: its objective values at its best epoch so far
(`best_<metric>`), told as a COMPLETE trial. ASHA stopped it because it was worse than its peers at
the same rung, and its best-so-far value says exactly that, on the same scale as finished trials
(telling Optuna "pruned" would hide how close it came; its last epoch's value could be a dip).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from affectune.metrics import pareto_front
from affectune.studies.spec import StudySpec, check_store_shared
from affectune.studies.trial import CleanStop, TrialContext, search_view, trial_trainable


@dataclass
class StudyResult:
    """What a finished study produced (everything is also in the store)."""

    name: str
    store_root: str
    tune_path: str
    trials: pd.DataFrame
    """The study's trial rows (search phase), as in the store."""
    selected: list[str]
    """Trial ids selected on validation."""
    summary: pd.DataFrame
    """AUILC on test of the selected configs (mean over train seeds x mask seeds)."""
    curves: pd.DataFrame
    """Test-grid curves of the selected configs."""
    search_wall_s: float
    eval_wall_s: float
    eval_validation: dict = field(default_factory=dict)
    """trial_id -> {metric: (mean, std)} of the selected configs' validation scores over eval seeds."""
    interrupted: bool = False
    """True when the search was interrupted before all trials ended (resume it)."""


class StudyExists(RuntimeError):
    """A study of that name already has trials in the store and resume was not asked for."""


# --------------------------------------------------------------------------- progress
def _progress_callback_base():
    from ray.tune import Callback

    return Callback


class ProgressLine(_progress_callback_base()):
    """One compact line per epoch result and per trial end (Tune's tables are too wide for a log)."""

    def __init__(self, study: str, metric: str):
        self.study, self.metric, self.started = study, metric, time.time()
        self.done: dict[str, str] = {}

    def _line(self, text: str) -> None:
        print(f"[{self.study} {time.time() - self.started:6.0f}s] {text}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted((trial.config or {}).items()))
        value, best = result.get(self.metric), result.get(f"best_{self.metric}")
        self._line(f"trial {trial.trial_id} epoch {result.get('epoch')}: {self.metric}={value:.4f} "
                   f"best={best:.4f} ({params})" if isinstance(value, float) and isinstance(best, float)
                   else f"trial {trial.trial_id} epoch {result.get('epoch')}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done[trial.trial_id] = "done"
        running = sum(t.status == "RUNNING" and t is not trial for t in trials)
        self._line(f"trial {trial.trial_id} ended ({len(self.done)} ended, {running} running)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done[trial.trial_id] = "failed"
        self._line(f"trial {trial.trial_id} FAILED: {trial.error_file}")


# --------------------------------------------------------------------------- Ray set-up
def init_ray(address: str | None = None, **kwargs) -> None:
    """Connect to `address` (a running cluster, "auto") or start a local Ray with this machine's
    resources. Does nothing if Ray is already initialised in this process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(**kwargs)


def cluster_shape() -> tuple[int, bool]:
    """(machines with a live Ray node, whether an autoscaler can add nodes) of the connected Ray.

    Every head runs a monitor that publishes an "autoscaler_report" (ray/autoscaler/_private/
    monitor.py:411-452); see `autoscaler_adds_nodes` for telling a `ray up` autoscaler from the
    read-only one of `ray.init()` / a manual `ray start`. Autoscaler v2 clusters also publish
    node-group configs (ray/_private/state.py:983-1044, what Ray Train's feasibility check reads)."""
    import ray
    from ray._private import ray_constants
    from ray._private.state import state
    from ray.experimental.internal_kv import _internal_kv_get

    hosts = len({node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]})
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    autoscaling = bool(status) and autoscaler_adds_nodes(json.loads(status).get("autoscaler_report") or {})
    try:
        autoscaling = autoscaling or state.get_max_resources_from_cluster_config() is not None
    except Exception:  # noqa: BLE001 - a GCS without cluster configs: the monitor's report decides
        pass
    return hosts, autoscaling


_READONLY_NODE_TYPE = re.compile(r"node_[0-9a-f]+")
"""How the read-only provider names node types (ray/autoscaler/_private/util.py:986-988)."""


def autoscaler_adds_nodes(report: dict) -> bool:
    """True when the monitor's autoscaler_report (an AutoscalerSummary as a dict) comes from a
    cluster config's node types (`ray up`), False for the read-only provider that only mirrors
    manually started nodes under per-node types "node_<id>" and never launches any
    (monitor.py:108-125, 228-240)."""
    types = set(report.get("active_nodes") or {}) | set(report.get("pending_launches") or {})
    types |= {entry[1] for entry in report.get("pending_nodes") or []}
    return any(not _READONLY_NODE_TYPE.fullmatch(t) for t in types)


def _resolve_objectives(spec: StudySpec, dataset) -> tuple[tuple[str, str], ...]:
    """Modes filled in: "objective" follows the train loop's selection direction, metrics their own."""
    from affectune.metrics import metric_direction
    from affectune.train import TrainConfig

    base = TrainConfig.from_dict({**spec.base_config, "model": spec.method, "dataset": spec.dataset})
    _, selection_mode = base.selection(dataset.task)
    out = []
    for metric, mode in spec.objectives:
        if mode is None:
            if metric in ("objective", "best_objective"):
                mode = selection_mode
            elif metric == "num_parameters":
                mode = "min"
            elif metric.startswith(("val_", "valmask_")):
                mode = metric_direction(metric.split("_", 1)[1])
            else:
                raise ValueError(f"study {spec.name!r}: objective {metric!r} needs an explicit mode")
        out.append((metric, mode))
    return tuple(out)


def _sampler(space, spec: StudySpec):
    """TPE (seeded), except on a finite grid no larger than the budget: there TPE's random start-up
    draws repeat grid points, and a repeated config with the same seed is an identical, wasted trial,
    so every point is tried once, in a seeded random order (running trials count as taken)."""
    import optuna

    if space.grid and spec.num_trials <= len(space.grid):
        with warnings.catch_warnings():  # "experimental" since Optuna 3.1; its behaviour is what we test
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.BruteForceSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.resolved_tpe_startup_trials())


def _space(spec: StudySpec):
    from affectune.search_spaces import SearchSpace, get_space

    if callable(spec.search_space):
        fn = spec.search_space  # a plain define-by-run function; `fn.helpers` may name derivation-only params
        return SearchSpace(spec.method, getattr(fn, "__name__", "custom"), fn, helpers=tuple(getattr(fn, "helpers", ())))
    return get_space(spec.method, spec.search_space)


def _base_config(spec: StudySpec, objectives) -> dict:
    base = dict(spec.base_config)
    first = objectives[0][0]
    if first.startswith(("val_", "valmask_")) and "select_metric" not in base:
        base["select_metric"] = first  # the train loop's best epoch = the first objective's best epoch
    return base


# --------------------------------------------------------------------------- the study
@dataclass
class _Study:
    """What the steps of one study share once the dataset is loaded."""

    spec: StudySpec
    store: Any
    dataset: Any
    objectives: tuple
    space: Any
    base: dict
    ctx: TrialContext
    refs: dict

    @property
    def tune_path(self) -> str:
        return f"{self.spec.tune_storage.rstrip('/')}/{self.spec.name}"


def run_study(spec: StudySpec, address: str | None = None, resume: bool = False) -> StudyResult:
    """Run (or with `resume=True` continue) the study; see the module docstring for the phases."""
    store = _open_store_for(spec, resume)
    init_ray(address)
    check_store_shared(spec, *cluster_shape())  # before any trial writes a row on some node's disk
    study = _prepare(spec, store)
    started = time.time()
    finished, exhausted = _search(study, resume)
    search_wall = time.time() - started
    if finished < study.spec.num_trials and not exhausted:  # Ctrl-C (or a driver stop): Tune saved its state
        print(f"[affectune] study {spec.name!r} interrupted after {finished}/{study.spec.num_trials} trials; "
              f"continue it with resume=True (--resume)", flush=True)
        return StudyResult(name=spec.name, store_root=spec.storage, tune_path=study.tune_path,
                           trials=store.trials(spec.name), selected=[], summary=pd.DataFrame(),
                           curves=pd.DataFrame(), search_wall_s=search_wall, eval_wall_s=0.0, interrupted=True)
    selected = _select(study)
    started = time.time()
    eval_validation, curves, summary = _evaluate_selected(study, selected)
    return StudyResult(name=spec.name, store_root=spec.storage, tune_path=study.tune_path,
                       trials=store.trials(spec.name), selected=selected, summary=summary, curves=curves,
                       search_wall_s=search_wall, eval_wall_s=time.time() - started,
                       eval_validation=eval_validation)


def _open_store_for(spec: StudySpec, resume: bool):
    """The study store; a study that already has trials is refused unless resumed (before Ray starts)."""
    from affectune.store import open_store

    store = open_store(spec.storage)
    existing = store.trials(spec.name)
    if len(existing) and not resume:  # nothing is overwritten
        raise StudyExists(f"study {spec.name!r} already has {len(existing)} trials in {spec.storage!r}: "
                          "pass resume=True (--resume) to continue it, or choose another name (--name)")
    store.check_writable()  # a read-only or full store fails here, before Ray starts or any trial trains
    # Every epoch reports a checkpoint (mid-trial resume) and num_to_keep=1 forces an experiment
    # snapshot each time, by design; Tune's "snapshotting may become a bottleneck" warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    return store


def _prepare(spec: StudySpec, store) -> _Study:
    """Load the dataset once (trials get a reference to its validation-only view), resolve the
    objectives, space and base config, and write the study's row."""
    import ray

    from affectune.data import load

    dataset = load(spec.dataset)
    spec.resolved_eval_splits(dataset)  # a missing eval split fails now, not after the search
    objectives = _resolve_objectives(spec, dataset)
    space = _space(spec)
    spec = trial_budget(spec, space)
    base = _base_config(spec, objectives)
    ctx = trial_context(spec, dataset, base, objectives, tuple(space.helpers))
    # ray.put once: every trial and worker reads the same object-store copy (zero-copy numpy).
    refs = {"dataset": [ray.put(search_view(dataset))], "spec": dataset.spec()}
    study = _Study(spec, store, dataset, objectives, space, base, ctx, refs)
    _write_study_row(study)
    return study


def trial_budget(spec: StudySpec, space) -> StudySpec:
    """`spec` with at most one trial per point of a finite grid: every trial trains with the study's
    seed, so a repeated point is an identical run (a 6-trial study on a 5-point grid wasted 3
    on repeats under TPE, docs/studies.md). Other spaces keep the budget."""
    if not space.grid or spec.num_trials <= len(space.grid):
        return spec
    if spec.verbose:
        print(f"[affectune] space {space.name!r} has {len(space.grid)} points: running {len(space.grid)} trials, "
              f"each point once (asked for {spec.num_trials})", flush=True)
    return replace(spec, num_trials=len(space.grid))


def trial_context(spec: StudySpec, dataset, base: dict, objectives, helpers: tuple = (),
                  phase: str = "search") -> TrialContext:
    """What every trial (or evaluation run) of `spec` shares: lineage, store, run settings."""
    from affectune import code_version

    return TrialContext(
        study=spec.name, method=spec.method, dataset_source=spec.dataset, fingerprint=dataset.fingerprint,
        code_version=code_version(), store_root=spec.storage if "://" in spec.storage
        else os.path.abspath(spec.storage), base_config=base, helpers=helpers,
        objectives=objectives, execution=spec.resolved_execution, workers=spec.workers_per_trial,
        gpus_per_worker=spec.gpus_per_worker, cpus_per_worker=spec.cpus_per_worker,
        resources_per_worker=dict(spec.resources_per_worker), tune_storage=spec.tune_storage, seed=spec.seed,
        worker_start_timeout_s=spec.worker_start_timeout_s, controller_failure_limit=spec.controller_failure_limit,
        train_max_failures=spec.max_failures, phase=phase,
    )


def _write_study_row(study: _Study) -> None:
    spec, previous = study.spec, study.store.studies(study.spec.name)
    study.store.write_study({
        "study": spec.name, "method": spec.method, "dataset": spec.dataset, "fingerprint": study.ctx.fingerprint,
        "search_space": {**study.space.describe(), "helpers": list(study.space.helpers)},
        "objective": [{"metric": m, "mode": mode} for m, mode in study.objectives],
        "config": study.base, "code_version": study.ctx.code_version,
        "created": previous["created"].iloc[0] if len(previous) else None,
        "num_trials": spec.num_trials, "execution": study.ctx.execution,
        "workers_per_trial": spec.workers_per_trial, "gpus_per_worker": spec.gpus_per_worker,
    })


def _search(study: _Study, resume: bool) -> tuple[int, bool]:
    """Phase 1: the Tune run (restored when resuming); returns how many trials ended and whether the
    searcher ended the search because its space was exhausted (then fewer trials are complete)."""
    from ray import tune

    spec = study.spec
    trainable = _with_resources(spec, study.ctx.execution,
                                tune.with_parameters(trial_trainable, ctx=study.ctx, refs=study.refs))
    with tune_output(spec.verbose):  # from here: the searcher logs when it creates its study
        if resume and tune.Tuner.can_restore(study.tune_path):
            print(f"[affectune] resuming study {spec.name!r} from {study.tune_path}", flush=True)
            tuner = tune.Tuner.restore(study.tune_path, trainable, resume_unfinished=True, resume_errored=False)
        else:
            tuner = tune.Tuner(trainable, tune_config=_tune_config(study),
                               run_config=_run_config(spec, spec.name, study.objectives[0][0]))
        grid = tuner.fit()
    return grid.num_terminated + grid.num_errors, _search_exhausted(tuner)


def _search_exhausted(tuner) -> bool:
    """Whether the study's NoRepeatOptunaSearch ended the search on repeats. It is read from the
    object the Tune run used (a restored run restores its saved state into it); Tune has no public
    accessor, and under Ray Client (ray://) the searcher runs remotely: then False."""
    local = getattr(tuner, "_local_tuner", None)
    return bool(getattr(local._tune_config.search_alg, "exhausted", False)) if local else False


def _tune_config(study: _Study):
    """OptunaSearch on the space (best-so-far objectives, see the module docstring; no repeated
    configs) and ASHA."""
    from ray import tune

    from affectune.studies.searcher import NoRepeatOptunaSearch

    spec, objectives = study.spec, study.objectives
    first_metric, first_mode = objectives[0]
    epochs = _max_epochs(study)
    searcher = NoRepeatOptunaSearch(
        space=study.space.define,
        metric=[f"best_{m}" for m, _ in objectives] if spec.multi_objective else f"best_{first_metric}",
        mode=[mode for _, mode in objectives] if spec.multi_objective else first_mode,
        sampler=_sampler(study.space, spec),
    )
    scheduler = (asha_scheduler(first_metric, first_mode, epochs, spec.resolved_grace_period(epochs),
                                spec.reduction_factor, spec.plateau_tol) if spec.use_asha else None)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=spec.num_trials,
                           max_concurrent_trials=spec.max_concurrent)


def asha_scheduler(metric: str, mode: str, max_epochs: int, grace_period: int, reduction_factor: int,
                   plateau_tol: float | None = None):
    """The study's early-stopping rule: Ray's ASHA on `metric` per epoch (training_iteration), rungs
    at grace_period * reduction_factor**k; the search-efficiency benchmark replays this very object.
    `plateau_tol` (None = off) makes rung decisions wait for evidence (`_PlateauASHA`)."""
    from ray.tune.schedulers import ASHAScheduler

    kwargs = dict(time_attr="training_iteration", metric=metric, mode=mode, max_t=max_epochs,
                  grace_period=grace_period, reduction_factor=reduction_factor)
    if plateau_tol is None:
        return ASHAScheduler(**kwargs)
    return _plateau_asha_class()(plateau_tol=plateau_tol, **kwargs)


def _plateau_asha_class():
    """`_PlateauASHA`, defined on first use so importing the runner does not import Ray Tune."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class _PlateauASHA(ASHAScheduler):
        """ASHA that compares trials at a rung only on evidence: a trial's value counts at a rung once
        it has left the plateau (improved on its first epoch's value by more than `plateau_tol`
        times that value), or once an earlier trial at that rung had left it (then a trial still on
        the plateau is behind, and is compared). Otherwise the trial skips that rung (recorded as
        NaN, which ASHA's cut-off ignores) and is judged at the next one, at equal epochs."""

        def __init__(self, plateau_tol: float, **kwargs):
            super().__init__(**kwargs)
            self._plateau_tol = plateau_tol
            self._first: dict[str, float] = {}
            self._left: set[str] = set()
            self._evidence: set[int] = set()  # rungs (milestones) where a trial that left the plateau counted

        def on_trial_result(self, tune_controller, trial, result) -> str:
            if self._time_attr not in result or self._metric not in result:
                return super().on_trial_result(tune_controller, trial, result)
            value, epoch = self._metric_op * result[self._metric], result[self._time_attr]  # higher is better
            first = self._first.setdefault(trial.trial_id, value)
            if value > first + self._plateau_tol * abs(first):
                self._left.add(trial.trial_id)
            rung = next(((m, rec) for m, rec in self._trial_info[trial.trial_id]._rungs
                         if epoch >= m and trial.trial_id not in rec), None)  # the rung ASHA would decide at
            if rung is None or epoch >= self._max_t:
                return super().on_trial_result(tune_controller, trial, result)
            milestone, recorded = rung
            if trial.trial_id in self._left:
                self._evidence.add(milestone)
            elif milestone not in self._evidence:
                recorded[trial.trial_id] = float("nan")  # no evidence yet: skip this rung
                return TrialScheduler.CONTINUE
            with warnings.catch_warnings():  # a rung of skipped trials only: no cut-off (NaN), no stop
                warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
                return super().on_trial_result(tune_controller, trial, result)

    return _PlateauASHA


def _max_epochs(study: _Study) -> int:
    """The base config's epoch budget (TrainConfig's default when the base config sets none)."""
    from affectune.train import TrainConfig

    return max(1, TrainConfig.from_dict({**study.base, "model": study.spec.method}).epochs)


def _run_config(spec: StudySpec, name: str, progress_metric: str):
    """Tune's RunConfig: our one-line progress (unless verbose=0); Tune's own output only at verbose=2."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    callbacks = [CSVLoggerCallback(), JsonLoggerCallback()]  # result files; no TensorBoard logger
    if spec.verbose:
        callbacks.append(ProgressLine(name, progress_metric))
    return tune.RunConfig(name=name, storage_path=spec.tune_storage,
                          failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                          verbose=1 if spec.verbose >= 2 else 0, callbacks=callbacks)


@contextmanager
def tune_output(verbose: int):
    """Below verbose=2: no Tune banner ("View detailed results here"), status table, TensorBoard
    hint or INFO log lines (Tune's, Optuna's); the legacy reporter at verbosity 0 prints nothing
    and no TensorBoard logger is added. Everything is restored on exit."""
    import logging

    import optuna

    if verbose >= 2:
        yield
        return
    keys = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    saved = {k: os.environ.get(k) for k in keys}
    tune_logger, optuna_level = logging.getLogger("ray.tune"), optuna.logging.get_verbosity()
    tune_level = tune_logger.level
    os.environ.update(keys)
    tune_logger.setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        tune_logger.setLevel(tune_level)
        optuna.logging.set_verbosity(optuna_level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _select(study: _Study) -> list[str]:
    """Phase 2: selection on validation only, from the rows the trials wrote; marked in the store."""
    trials = study.store.trials(study.spec.name)
    selected, pareto = select_trials(trials, study.objectives, study.spec.top_k)
    study.store.mark_trials(study.spec.name, selected=selected, pareto=pareto)
    return selected


def _with_resources(spec: StudySpec, execution: str, trainable):
    from ray import tune

    if execution == "train":
        # The trial itself only coordinates: a sliver of CPU, so N workers x cpus_per_worker fit.
        return tune.with_resources(trainable, {"cpu": 0.01})
    trainable.__mixins__ = (CleanStop,)  # a stopped trial's actor waits for its loop to leave torch
    resources = {"cpu": spec.cpus_per_worker, **spec.resources_per_worker}
    if spec.gpus_per_worker:
        resources["gpu"] = spec.gpus_per_worker
    return tune.with_resources(trainable, resources)


# --------------------------------------------------------------------------- selection
def select_trials(trials: pd.DataFrame, objectives, top_k: int) -> tuple[list[str], list[str]]:
    """(selected ids, pareto ids) from validation columns best_<metric> only.

    Candidates: completed trials (stopped ones too if none completed) with finite objectives.
    Single objective: the top_k by the first objective. Several: the Pareto set (all selected).
    """
    cols = [f"best_{m}" for m, _ in objectives]
    if trials.empty or any(c not in trials.columns for c in cols):
        return [], []
    pool = trials[trials["status"] == "completed"]
    if pool.empty:
        pool = trials[trials["status"] == "stopped"]
    values = pool[cols].astype(float)
    pool = pool[np.isfinite(values.to_numpy()).all(axis=1)]
    if pool.empty:
        return [], []
    values = pool[cols].astype(float).to_numpy()
    modes = [mode for _, mode in objectives]
    front = list(pool["trial_id"][pareto_front(values, modes)])
    if len(objectives) > 1:
        return sorted(front), sorted(front)
    order = np.argsort(-values[:, 0] if modes[0] == "max" else values[:, 0], kind="stable")
    return list(pool["trial_id"].iloc[order[:top_k]]), front


# --------------------------------------------------------------------------- final evaluation
def _evaluate_selected(study: _Study, selected: list[str]) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Phase 3: each selected config with every train seed (retrained where the search run does
    not cover the seed), each model once on the robustness grid of every eval split; curves and
    AUILC summaries go to the store with lineage. Returns (validation stats, curves, summary)."""
    if not selected:
        return {}, pd.DataFrame(), pd.DataFrame()
    rows = study.store.trials(study.spec.name).set_index("trial_id")
    checkpoints, retrain = _plan_runs(study.spec, rows, selected)
    validation = {(t, int(rows.loc[t, "seed"])): _val_columns(rows.loc[t]) for t in selected}
    if retrain:
        ckpts, metrics = _retrain(study, retrain)
        checkpoints.update(ckpts)
        validation.update(metrics)
    grids = _test_grids(study, selected, checkpoints)
    all_curves, all_summaries, eval_validation = [], [], {}
    for trial_id in selected:
        curves, summary = _store_grid(study, trial_id, json.loads(rows.loc[trial_id, "config"]), grids[trial_id])
        all_curves.append(curves.assign(trial_id=trial_id))
        all_summaries.append(summary.assign(trial_id=trial_id))
        eval_validation[trial_id] = _mean_std([validation[(trial_id, s)] for s in study.spec.train_seeds
                                               if (trial_id, s) in validation])
    return eval_validation, pd.concat(all_curves, ignore_index=True), pd.concat(all_summaries, ignore_index=True)


def _val_columns(row) -> dict:
    """The validation metric columns (val_*, valmask_*) of a trial row or a metrics record."""
    return {k: row[k] for k in row.index if str(k).startswith(("val_", "valmask_"))}


def _plan_runs(spec: StudySpec, rows: pd.DataFrame, selected: list[str]) -> tuple[dict, list[dict]]:
    """(trial_id, train seed) -> checkpoint for the runs the search already made (its own seed),
    and the retrain entries for the other train seeds."""
    checkpoints: dict[tuple[str, int], str] = {}
    retrain = []
    for trial_id in selected:
        row = rows.loc[trial_id]
        config, params = json.loads(row["config"]), json.loads(row["params"])
        for seed in spec.train_seeds:
            if seed == int(row["seed"]) and isinstance(row.get("checkpoint_path"), str):
                checkpoints[(trial_id, seed)] = row["checkpoint_path"]
            else:
                retrain.append({"trial_id": trial_id, "seed": seed, "config": config, "params": params,
                                "artifact_name": f"{trial_id}-seed{seed}"})
    return checkpoints, retrain


def _retrain(study: _Study, retrain: list[dict]) -> tuple[dict, dict]:
    """Train the retrain entries as a Tune grid over their indices (the entries travel with the
    trainable); returns their checkpoints and best-epoch validation metrics by (trial_id, seed)."""
    from ray import tune

    spec = study.spec
    eval_ctx = TrialContext(**{**study.ctx.__dict__, "phase": "eval"})
    trainable = _with_resources(spec, study.ctx.execution, tune.with_parameters(
        trial_trainable, ctx=eval_ctx, refs={**study.refs, "eval_runs": retrain}))
    tuner = tune.Tuner(trainable, param_space={"eval_run": tune.grid_search(list(range(len(retrain))))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent),
                       run_config=_run_config(spec, f"{spec.name}-eval", study.objectives[0][0]))
    with tune_output(spec.verbose):
        results = tuner.fit()
    checkpoints, metrics = {}, {}
    for result in results:
        entry = retrain[result.config["eval_run"]]
        if result.error is not None:
            raise RuntimeError(f"study {spec.name!r}: evaluation run of trial {entry['trial_id']} with seed "
                               f"{entry['seed']} failed: {result.error}")
        key = (entry["trial_id"], int(entry["seed"]))
        checkpoints[key] = f"{study.store.base.rstrip('/')}/artifacts/study={spec.name}/{entry['artifact_name']}/best.pt"
        history = result.metrics_dataframe
        best = history.loc[history["best_epoch"] == history["epoch"]].iloc[-1] if history is not None \
            and len(history) else pd.Series(result.metrics)
        metrics[key] = _val_columns(best)
    return checkpoints, metrics


def _test_grids(study: _Study, selected: list[str], checkpoints: dict) -> dict[str, pd.DataFrame]:
    """The robustness grid on every eval split, once per (selected config, train seed): Ray tasks
    with the workers' resources (parallel, one torch thread per CPU: oversubscribed threads are 10x
    slower on a shared host). Returns trial_id -> curves with a train_seed column."""
    import ray

    spec = study.spec
    splits = spec.resolved_eval_splits(study.dataset)
    full_ref = ray.put(study.dataset)
    evaluate_one = ray.remote(_evaluate_checkpoint).options(
        num_cpus=spec.cpus_per_worker, num_gpus=spec.gpus_per_worker or 0,
        resources=dict(spec.resources_per_worker) or None)
    pending = {(t, s): evaluate_one.remote(study.ctx.store_root, checkpoints[(t, s)], full_ref, splits,
                                           spec.mask_seeds, spec.patterns, spec.fills, spec.cpus_per_worker,
                                           spec.gpus_per_worker)
               for t in selected for s in spec.train_seeds}
    return {t: pd.concat([ray.get(pending[(t, s)]).assign(train_seed=s) for s in spec.train_seeds],
                         ignore_index=True) for t in selected}


def _store_grid(study: _Study, trial_id: str, config: dict, curves: pd.DataFrame):
    """Write one selected config's curves and AUILC summary (per split) with lineage."""
    lineage = {"method": study.spec.method, "dataset": study.spec.dataset, "fingerprint": study.ctx.fingerprint,
               "code_version": study.ctx.code_version, "config": config}
    summary = _summary_over_seeds(curves)
    study.store.write_curves(study.spec.name, trial_id, curves, lineage=lineage)
    study.store.write_summary(study.spec.name, trial_id, summary, lineage=lineage)
    return curves, summary


def _mean_std(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, std over runs; NaN std for one run)."""
    stats = {}
    for k in sorted(set().union(*runs)) if runs else []:
        vals = np.array([float(r[k]) for r in runs if k in r and r[k] is not None], dtype=float)
        stats[k] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan)
    return stats


def _evaluate_checkpoint(store_root: str, path: str, dataset, splits, mask_seeds, patterns, fills,
                         cpus: float, gpus: float) -> pd.DataFrame:
    """Robustness-grid curves of one checkpoint on each split (a Ray task; the only place the
    evaluation splits are read)."""
    from affectune.evaluate import robustness

    model = load_stored_model(store_root, path, cpus, gpus)
    return pd.concat([robustness(model, dataset, split=split, seeds=mask_seeds, patterns=patterns,
                                 fills=fills).curves for split in splits], ignore_index=True)


def load_stored_model(store_root: str, path: str, cpus: float, gpus: float):
    """The model of a checkpoint in the store, on this worker's GPU when it holds one; torch
    limited to the worker's CPUs (oversubscribed threads are 10x slower on a shared host)."""
    import torch

    from affectune.store import open_store
    from affectune.train import load_checkpoint

    torch.set_num_threads(max(1, int(cpus)))
    with tempfile.TemporaryDirectory(prefix="affectune-eval-") as tmp:
        local = open_store(store_root).fetch_artifact(path, os.path.join(tmp, "best.pt"))
        model, _ = load_checkpoint(local, device="cuda" if gpus and torch.cuda.is_available() else "cpu")
    return model


def _summary_over_seeds(curves: pd.DataFrame) -> pd.DataFrame:
    """AUILC per (split, subset, pattern, fill, metric): mean and std over (train seed, mask seed)."""
    from affectune.evaluate import summarize

    combined = curves.assign(seed=curves["train_seed"].astype(np.int64) * 1_000_003 + curves["seed"].astype(np.int64))
    return summarize(combined.drop(columns=["train_seed"]))
