"""One trial: a Tune function trainable that trains a config with Ray Train (or in the trial itself)
and writes its own row to the study store.

Rows are written by the trial, never by the driver, so concurrent trials on many nodes lose
nothing: rank 0 rewrites the row after every epoch (status "stopped", i.e. "ended here unless a
later row says otherwise": this is the final row of a trial ASHA stops, because a stopped trial is
killed without a chance to write), then "completed" with the persisted best checkpoint when the
loop returns. The Tune function writes "failed" (with the error) when an attempt raises, then
re-raises so Tune retries; `attempts` counts the attempts.

When Tune stops an in-process trial (ASHA, Ctrl-C), `CleanStop` makes the stop clean: the loop
leaves torch code at the next batch (`should_stop`) and the trial's actor waits for its training
thread to end before it exits, so no thread is still in torch at interpreter exit (a daemon thread
in torch code at exit aborts the process with SIGABRT, which Ray prints as a stack trace).

Workers only ever receive the validation-only view of the dataset (`SearchView`): the test split
is not in the object they get, and asking for it raises `TestSplitAccess`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from affectune.data.schema import Dataset

SEARCH_SPLITS = ("train", "valid")


class TestSplitAccess(KeyError):
    """The search phase asked for a split it must never see."""

    __test__ = False  # not a pytest test class


class _SearchSplits(dict):
    """The splits of a search view: only train and valid; any other key raises TestSplitAccess."""

    def __missing__(self, key):
        raise TestSplitAccess(f"split {key!r} is not visible during the search (only {SEARCH_SPLITS}); "
                              "test is read only by the final evaluation after selection")


class SearchView(Dataset):
    """A Dataset holding only the train and valid splits, with the full dataset's fingerprint."""

    @property
    def fingerprint(self) -> str:  # the full dataset's, computed before the test split was removed
        return self._full_fingerprint


def search_view(dataset: Dataset) -> SearchView:
    """The validation-only view of `dataset` (shares its arrays; the test split is not referenced)."""
    view = SearchView.__new__(SearchView)
    view.__dict__.update(dataset.__dict__)
    view.splits = _SearchSplits({k: v for k, v in dataset.splits.items() if k in SEARCH_SPLITS})
    view._full_fingerprint = dataset.fingerprint
    return view


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares (small and picklable; the dataset travels by reference)."""

    study: str
    method: str
    dataset_source: str
    fingerprint: str
    code_version: str
    store_root: str
    base_config: dict
    helpers: tuple
    objectives: tuple  # ((metric, mode), ...) with modes resolved
    execution: str  # "train" or "in_process"
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    resources_per_worker: dict
    tune_storage: str
    seed: int
    phase: str = "search"  # "search" writes trial rows; "eval" only persists checkpoints
    worker_start_timeout_s: float | None = None  # Ray Train's worker-group start timeout; None = Ray's 60 s
    controller_failure_limit: int = 2  # Ray Train controller failures (start timeouts included) tolerated
    train_max_failures: int = 1  # Ray Train worker-group restarts per trial attempt (from latest.pt)


_STOP_REQUESTED = threading.Event()
"""Set in a trial's actor when Tune stops the trial; the in-process loop reads it between batches."""

STOP_JOIN_TIMEOUT_S = 120.0
"""How long a stopping in-process trial waits for its training thread (one batch, normally)."""


class CleanStop:
    """A mixin for Tune's function trainable of in-process trials (set as `__mixins__`, which
    `ray.tune`'s `wrap_function` adds to the generated class).

    Tune's own cleanup (ray/tune/trainable/function_trainable.py, `FunctionTrainable.cleanup`)
    releases the training thread and returns without waiting for it (`session.finish(timeout=0)`);
    the actor then exits (`__ray_terminate__`) while that daemon thread may still be unwinding or
    in torch code. Here the stop is requested from the loop first and the thread is joined."""

    def cleanup(self):
        from ray.train._internal.session import get_session, shutdown_session

        _STOP_REQUESTED.set()
        session = get_session()
        try:
            session.finish(timeout=STOP_JOIN_TIMEOUT_S)  # raises what training raised, as Tune's does
        finally:
            session._report_thread_runner_error()
            if session.training_started and session.training_thread.is_alive():
                print(f"[affectune] the trial's training thread did not end within {STOP_JOIN_TIMEOUT_S:.0f} s "
                      "of the stop", flush=True)
            shutdown_session()


def _store(ctx: TrialContext):
    from affectune.store import open_store

    return open_store(ctx.store_root)


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (direct calls in tests)
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Tracker:
    """Follows the per-epoch metrics: best-epoch snapshot (by the train loop's selection) and curve."""

    def __init__(self, objectives: tuple, num_parameters: int):
        self.objectives, self.num_parameters = objectives, num_parameters
        self.curve: list[dict] = []
        self.best: dict = {}

    def update(self, metrics: dict) -> dict:
        metrics = dict(metrics, num_parameters=self.num_parameters)
        if metrics.get("best_epoch") == metrics.get("epoch"):
            self.best = dict(metrics)
        # best_<m>: the objective values at the best epoch, what Optuna learns (also for stopped trials).
        for metric, _mode in self.objectives:
            value = self.best.get(metric, metrics.get(metric))
            metrics[f"best_{metric}"] = float(value) if _finite(value) else float("nan")
        self.curve.append({k: v for k, v in metrics.items() if _finite(v)})
        return metrics


def _row(ctx: TrialContext, trial_id: str, params: dict, config: dict, tracker: _Tracker | None,
         status: str, started: float, attempts: int, **extra) -> dict:
    row = {"trial_id": trial_id, "status": status, "params": params, "config": config,
           "seed": config.get("seed", ctx.seed), "method": ctx.method, "dataset": ctx.dataset_source,
           "fingerprint": ctx.fingerprint, "code_version": ctx.code_version, "node_id": _node_id(),
           "wall_time_s": time.time() - started, "started_at": started, "attempts": attempts, "phase": ctx.phase}
    if tracker is not None:
        row.update(epochs_run=len(tracker.curve), learning_curve=tracker.curve,
                   num_parameters=tracker.num_parameters)
        # Final metric columns = the best epoch's validation metrics (what selection uses).
        for key, value in tracker.best.items():
            if key.startswith(("val_", "valmask_")) and _finite(value):
                row[key] = float(value)
        for metric, _mode in ctx.objectives:
            row[f"best_{metric}"] = tracker.best.get(metric, float("nan"))
        row["objective"] = tracker.best.get("objective", float("nan"))
        row["best_epoch"] = tracker.best.get("epoch")
    row.update(extra)
    return row


def run_worker(worker_config: dict) -> None:
    """Train one config in this process (a Ray Train worker, or the Tune trial itself).

    Every rank calls train_loop; rank 0 writes the provisional rows, persists the best checkpoint
    and writes the completed row.
    """
    import ray

    from affectune.train import distributed_info, train_loop

    ctx: TrialContext = worker_config["ctx"]
    dataset = ray.get(worker_config["dataset_ref"][0])
    if ctx.phase == "search" and set(dataset.splits) - set(SEARCH_SPLITS):
        raise RuntimeError(f"search trials must receive the validation-only view of the dataset, got splits "
                           f"{sorted(dataset.splits)}")
    rank = distributed_info()[0]
    device_row = _claim_device(ctx, worker_config["config"])  # every rank: it caps the GPU memory
    local_ckpt = tempfile.mkdtemp(prefix="affectune-trial-") if rank == 0 else None
    resume_dir = tempfile.mkdtemp(prefix="affectune-resume-")
    rows = _TrialRows(worker_config, local_ckpt, device_row) if rank == 0 else None
    tracker = _Tracker(ctx.objectives, worker_config["num_parameters"])
    try:
        resume_from = _restore_latest(ctx.execution == "train", resume_dir, local_ckpt)
        if resume_from is not None:
            for past in torch_load_history(resume_from):  # the curve keeps each epoch once
                tracker.update(past)
        train_loop({**worker_config["config"], "checkpoint_dir": local_ckpt}, _reporter(ctx, tracker, rows),
                   dataset=dataset, resume_from=resume_from,
                   should_stop=_STOP_REQUESTED.is_set if ctx.execution == "in_process" else None)
        if rows is not None:
            rows.finish(tracker)  # normally already done at the last report; cheap and idempotent
    finally:
        for path in (local_ckpt, resume_dir):
            if path:
                shutil.rmtree(path, ignore_errors=True)


class _TrialRows:
    """Rank 0's writes: the provisional "stopped" row per epoch, the best checkpoint and the
    "completed" row at the end (search phase); only the checkpoint in the eval phase."""

    def __init__(self, worker_config: dict, local_ckpt: str, device_row: dict):
        self.w, self.local_ckpt, self.device_row = worker_config, local_ckpt, device_row
        self.ctx: TrialContext = worker_config["ctx"]
        self.store = _store(self.ctx)

    def _row(self, tracker: _Tracker, status: str, **extra) -> dict:
        w = self.w
        return _row(self.ctx, w["trial_id"], w["params"], w["config"], tracker, status, w["started"],
                    w["attempts"], **self.device_row, **extra)

    def provisional(self, tracker: _Tracker) -> None:
        if self.ctx.phase == "search":
            self.store.write_trial(self.ctx.study, self._row(tracker, "stopped"))

    def finish(self, tracker: _Tracker) -> None:
        from affectune.train import CHECKPOINT_FILE

        ckpt_name = self.w["trial_id"] if self.ctx.phase == "search" else self.w["artifact_name"]
        artifact = self.store.put_artifact(os.path.join(self.local_ckpt, CHECKPOINT_FILE), self.ctx.study,
                                           ckpt_name, CHECKPOINT_FILE)
        if self.ctx.phase == "search":
            self.store.write_trial(self.ctx.study, self._row(tracker, "completed", checkpoint_path=artifact))


def _reporter(ctx: TrialContext, tracker: _Tracker, rows: _TrialRows | None):
    """The train loop's per-epoch callback: rows first (when Tune or ASHA stops the trial at this
    report, code after it never runs), then the report to Tune (through Ray Train when in_train).
    The loop's own `metrics["stop"]` (max epochs or patience used up) marks the last epoch, which
    finishes the trial's row; no stopping rule is re-derived here."""

    def reporter(metrics: dict, checkpoint_dir: str | None) -> None:
        metrics = tracker.update(metrics)
        if rows is not None:
            if metrics.get("stop") and metrics.get("best_epoch"):
                rows.finish(tracker)
            else:
                rows.provisional(tracker)
        # Every epoch rank 0 reports its checkpoint directory: best.pt (the selected weights) and
        # latest.pt (the resume state); Ray keeps only this newest one (num_to_keep=1).
        _report(ctx.execution == "train", metrics, rows.local_ckpt if rows is not None else None)

    return reporter


def _report(in_train: bool, metrics: dict, checkpoint_dir: str | None) -> None:
    """ray.train.report inside Ray Train workers (a barrier: every rank, every epoch), else
    ray.tune.report from the Tune trial itself; with the checkpoint directory on rank 0."""
    import ray

    if in_train:
        from ray.train import Checkpoint

        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)
    else:
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(checkpoint_dir)
                        if checkpoint_dir else None)


def _restore_latest(in_train: bool, into: str, local_ckpt: str | None) -> str | None:
    """The resume state of this trial's last reported epoch, if a previous attempt reported one
    (Tune retry, Ray Train worker-group restart, `--resume`): copied to `into` (and, on rank 0,
    into `local_ckpt` so best.pt is there for the final row). None on a fresh start."""
    import ray

    from affectune.train import RESUME_FILE

    checkpoint = ray.train.get_checkpoint() if in_train else ray.tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as src:
        shutil.copytree(src, into, dirs_exist_ok=True)
        if local_ckpt:
            shutil.copytree(src, local_ckpt, dirs_exist_ok=True)
    path = os.path.join(into, RESUME_FILE)
    return path if os.path.isfile(path) else None


def torch_load_history(resume_file: str) -> list[dict]:
    """The per-epoch metrics stored in a resume state (weights_only: no code runs)."""
    import torch

    return list(torch.load(resume_file, map_location="cpu", weights_only=True)["history"])


def _claim_device(ctx: TrialContext, config: dict) -> dict:
    """This worker's device (the rule of affectune.devices, as train_loop applies it) for the trial
    row, after capping its CUDA memory to the GPU fraction it reserved: whole splits are preloaded
    onto the GPU, so trials packed on one GPU must not take each other's memory."""
    from affectune.devices import cap_gpu_memory, describe, resolve

    device = resolve(config.get("device", "auto"))
    cap_gpu_memory(device, ctx.gpus_per_worker)
    return describe(device)


def _train_worker_entry(worker_config: dict) -> None:
    """Ray Train's train_loop_per_worker (module-level so it pickles by reference)."""
    run_worker(worker_config)


def trial_trainable(params: dict, *, ctx: TrialContext, refs: dict) -> None:
    """The Tune function trainable: params come from the searcher (or an eval grid entry)."""
    import ray

    from affectune.search_spaces import apply_params
    from affectune.train import TrainingStopped

    started = time.time()
    _STOP_REQUESTED.clear()  # a new trial in this actor
    tune_ctx = ray.tune.get_context()
    trial_id = tune_ctx.get_trial_id()
    params = dict(params)
    eval_run = params.pop("eval_run", None)
    if eval_run is not None:
        eval_entry = refs["eval_runs"][eval_run]  # final evaluation: a selected config retrained with another seed
        config = dict(eval_entry["config"], seed=int(eval_entry["seed"]))
        params = dict(eval_entry["params"])
        artifact_name = eval_entry["artifact_name"]
    else:
        config = apply_params(ctx.method, params, ctx.base_config, ctx.helpers)
        config.setdefault("seed", ctx.seed)
        artifact_name = trial_id
    config["dataset"] = ctx.dataset_source
    config["model"] = ctx.method
    if config.get("num_threads") is None:
        # One torch thread per logical CPU the worker holds: no oversubscription of shared cores.
        config["num_threads"] = max(1, int(ctx.cpus_per_worker))

    store = _store(ctx) if ctx.phase == "search" else None
    previous = store.read_trial(ctx.study, trial_id) if store is not None else None
    if previous and previous.get("status") == "completed" and previous.get("checkpoint_path"):
        # The trial finished training and persisted its row and checkpoint, but the driver stopped
        # before Tune registered the end: give Tune the stored last epoch instead of training again,
        # so a resumed study repeats no finished work.
        curve = previous["learning_curve"]
        ray.tune.report(dict((json.loads(curve) if isinstance(curve, str) else curve)[-1]))
        return
    attempts = int(previous.get("attempts") or 0) + 1 if previous else 1
    try:
        num_parameters = _count_parameters(ctx, config, refs)
        worker_config = {"ctx": ctx, "config": config, "params": params, "trial_id": trial_id,
                         "started": started, "attempts": attempts, "num_parameters": num_parameters,
                         "dataset_ref": refs["dataset"], "artifact_name": artifact_name}
        if ctx.execution == "in_process":
            run_worker(worker_config)
        else:
            _fit_with_ray_train(ctx, trial_id, worker_config)
    except TrainingStopped:
        return  # Tune stopped the trial mid-epoch (CleanStop): its last "stopped" row stays the final one
    except Exception as exc:
        if _stopped_by_tune(exc):
            raise  # ASHA/Tune stopped the trial: its last "stopped" row stays the final one
        if store is not None:
            # Keep the epochs this attempt did report (its provisional row), if any.
            current = store.read_trial(ctx.study, trial_id) or {}
            done = ({k: current[k] for k in ("epochs_run", "learning_curve") if k in current}
                    if current.get("attempts") == attempts else {})
            store.write_trial(ctx.study, _row(ctx, trial_id, params, config, None, "failed", started, attempts,
                                              error=f"{type(exc).__name__}: {exc}\n"
                                                    f"{traceback.format_exc(limit=8)}", **done))
        raise


def _stopped_by_tune(exc: BaseException) -> bool:
    """True when `exc` is Ray Train's controller dying because Tune removed the trial's placement
    group, i.e. the scheduler stopped the trial (not a failure of the trial itself)."""
    import ray.exceptions

    return isinstance(exc, ray.exceptions.RayActorError) and "placement group was removed" in str(exc)


def _count_parameters(ctx: TrialContext, config: dict, refs: dict) -> int:
    """Trainable parameters of the config's model (an invalid model config fails here, early)."""
    from affectune.models import build_model

    model = build_model(ctx.method, dict(config.get("model_config") or {}), refs["spec"])
    return int(model.num_parameters())


def _fit_with_ray_train(ctx: TrialContext, trial_id: str, worker_config: dict) -> None:
    """Build and fit a TorchTrainer; its reports reach Tune through TuneReportCallback."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.constants import WORKER_GROUP_START_TIMEOUT_S_ENV_VAR
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = {"CPU": ctx.cpus_per_worker, **ctx.resources_per_worker}
    if ctx.gpus_per_worker:
        resources["GPU"] = ctx.gpus_per_worker
    if ctx.worker_start_timeout_s is not None:
        # Ray Train reads this variable where fit() runs (this trial's process) and hands it to its
        # controller (ray/train/v2/_internal/constants.py:44-46, 125-143, 178-190;
        # api/data_parallel_trainer.py:268-282), whose worker group waits that long for its
        # placement group (execution/worker_group/worker_group.py:173-178, 301).
        os.environ[WORKER_GROUP_START_TIMEOUT_S_ENV_VAR] = str(float(ctx.worker_start_timeout_s))
    run_name = trial_id if ctx.phase == "search" else worker_config["artifact_name"]
    trainer = TorchTrainer(
        train_loop_per_worker=_train_worker_entry,
        train_loop_config=worker_config,
        scaling_config=ray.train.ScalingConfig(num_workers=ctx.workers, use_gpu=ctx.gpus_per_worker > 0,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            # Named after the trial (no timestamp) so a restarted trial finds its own run directory.
            name=f"{ctx.study}-{run_name}",
            storage_path=f"{ctx.tune_storage.rstrip('/')}/{ctx.study}-train",
            # A start timeout is a controller failure (execution/failure_handling/default.py:20-23, 100-110).
            # A lost worker restarts the worker group, which resumes from the latest checkpoint.
            failure_config=ray.train.FailureConfig(max_failures=ctx.train_max_failures,
                                                   controller_failure_limit=ctx.controller_failure_limit),
            # Only the newest checkpoint: it holds best.pt (the selected weights) and latest.pt.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()

