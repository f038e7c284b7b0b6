"""StudySpec: everything that defines one study (method x dataset x search space x budget x scaling)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

EXECUTIONS = ("auto", "train", "in_process")
COLD_START_TIMEOUT_S = 1200.0
"""Worker-group start timeout for studies on a cluster (--address): a g5 node takes ~10 min to
launch and run cluster.yaml's setup; twice that leaves room for a slow AMI or package mirror."""
MODES = ("max", "min")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def default_grace_period(epochs: int) -> int:
    """ASHA's default grace period for trials of `epochs` epochs: half the budget, at least 2 (capped
    at the budget). After one epoch most configs still sit on the same plateau, within the spread
    one config shows over training seeds, so a stop there is noise, and good configs often leave it
    only in the budget's second quarter; the search-efficiency benchmark (benchmarks/search.py,
    docs/studies.md) chose half over a quarter and over 1."""
    return min(epochs, max(2, epochs // 2))


def default_tpe_startup_trials(num_trials: int) -> int:
    """TPE's random start-up trials for a study of `num_trials` trials: Optuna's 10, or a quarter of
    the budget when that is smaller (at least 2), so TPE models the space within the trials a study
    runs (Optuna's 10 exceed a 9-trial study entirely); the search-efficiency benchmark chose it."""
    return min(10, max(2, num_trials // 4))


@dataclass
class StudySpec:
    """One hyper-parameter study. Checked on construction; every field has a working default."""

    name: str
    """Study name: the store partition and the Tune experiment name (letters, digits, _ . -)."""
    method: str
    """Registered model name (a key of the model registry, `affectune.models._registry`)."""
    dataset: str = "synthetic:mosi"
    """Dataset source string (synthetic preset, "mmsa:/path/aligned_50.pkl", "merbench:/dir")."""
    search_space: str | Callable = "paper"
    """Name of a registered space of `method`, or an Optuna define-by-run callable (module-level or a
    functools.partial of one: Tune pickles it with the searcher's state; `fn.helpers` may name
    derivation-only params)."""
    base_config: dict = field(default_factory=dict)
    """Train config every trial starts from (affectune.train.TrainConfig keys); params override it."""
    num_trials: int = 9
    """Trials the searcher proposes."""
    max_concurrent: int = 2
    """Trials running at the same time."""
    objectives: tuple = (("objective", None),)
    """[(metric, mode)...] on validation; mode None = the train loop's selection direction. The first
    drives ASHA and top-k selection; several make the search multi-objective (Pareto set)."""
    use_asha: bool = True
    """Stop poor trials early with ASHA on the first objective (per epoch)."""
    grace_period: int | None = None
    """ASHA: epochs every trial runs before it may be stopped; None = `default_grace_period` of the
    trials' epoch budget (half of it, at least 2; docs/studies.md says why)."""
    plateau_tol: float | None = None
    """ASHA: None = plain rung decisions; a number = compare a trial at a rung only once it (or an
    earlier trial at that rung) improved on its first epoch's objective by this fraction of it."""
    tpe_startup_trials: int | None = None
    """TPE: random trials before it models the space; None = `default_tpe_startup_trials(num_trials)`."""
    reduction_factor: int = 2
    """ASHA: keep 1/reduction_factor of the trials at each rung."""
    workers_per_trial: int = 1
    """Ray Train data-parallel workers per trial."""
    gpus_per_worker: float = 0.0
    """GPUs per worker (0 = CPU training); whole numbers when workers_per_trial > 1 (NCCL)."""
    cpus_per_worker: float = 1.0
    """Logical CPUs per worker (fractions let several workers share a core in tests)."""
    resources_per_worker: dict = field(default_factory=dict)
    """Extra custom Ray resources per worker, e.g. {"node2": 1} to pin workers to a node."""
    execution: str = "auto"
    """"train" (TorchTrainer per trial), "in_process" (train_loop inside the Tune trial) or "auto":
    in_process for 1-worker CPU trials (saves the TorchTrainer start-up), train otherwise."""
    storage: str = "results"
    """Study store root (local path or s3://...)."""
    ray_storage_path: str | None = None
    """Tune's storage_path (local or s3://); None = <storage>/ray (absolute)."""
    max_failures: int = 1
    """Tune retries of a failing trial before it is recorded as failed."""
    top_k: int = 1
    """Configs selected on validation for evaluation (single objective)."""
    train_seeds: tuple = (0,)
    """Train seeds each selected config is trained with for the final evaluation."""
    mask_seeds: tuple = (0, 1, 2)
    """Mask seeds of the test robustness grid."""
    eval_splits: tuple | None = None
    """Splits the final robustness grid runs on; None = "test", plus "ood" when the dataset has it.
    Never "train" or "valid" (those are the search's)."""
    patterns: tuple = ("random",)
    """Test-grid mask patterns ("random", "block")."""
    fills: tuple = ("zero",)
    """Test-grid fills ("zero", "gaussian")."""
    seed: int = 0
    """Seeds the searcher (TPE) and every search trial's training."""
    verbose: int = 1
    """Tune progress output: 0 silent, 1 compact status, 2 per-result lines."""
    worker_start_timeout_s: float | None = None
    """Seconds Ray Train waits for a trial's workers to be placed before the attempt fails; None =
    Ray's default (60 s). On an autoscaling cluster a new GPU node takes about 10 minutes to launch
    and set up, so the CLI uses COLD_START_TIMEOUT_S there."""
    controller_failure_limit: int = 2
    """Ray Train controller failures (a worker-group start timeout is one) a trial survives."""
    shared_storage: bool = False
    """The local `storage` path is a filesystem every node mounts (NFS, EFS); lifts the refusal of
    node-local store paths on multi-node clusters."""

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"StudySpec {self.name!r}: {msg}")

        need(isinstance(self.name, str) and bool(_NAME.match(self.name)),
             f"name must match {_NAME.pattern} (it names files and the Tune experiment)")
        need(isinstance(self.method, str) and bool(self.method), "method must be a registered model name")
        need(isinstance(self.dataset, str) and ":" in self.dataset,
             f"dataset must be a source string like 'synthetic:mosi', got {self.dataset!r}")
        need(isinstance(self.search_space, str) or callable(self.search_space),
             "search_space must be a registered space name or a define-by-run callable")
        need(isinstance(self.base_config, dict), "base_config must be a dict")
        for key in ("model", "dataset", "seed"):
            need(key not in self.base_config, f"base_config must not set {key!r} (the study sets it)")
        need(self.num_trials >= 1, f"num_trials must be >= 1, got {self.num_trials}")
        need(self.max_concurrent >= 1, f"max_concurrent must be >= 1, got {self.max_concurrent}")
        objectives = tuple((str(m), mode) for m, mode in self.objectives)
        need(len(objectives) >= 1, "at least one objective is required")
        for metric, mode in objectives:
            need(mode in (None, *MODES), f"objective {metric!r}: mode must be 'max', 'min' or None")
        need(len({m for m, _ in objectives}) == len(objectives), "objective metrics must be distinct")
        self.objectives = objectives
        need(self.grace_period is None or (isinstance(self.grace_period, int) and self.grace_period >= 1),
             f"grace_period must be an int >= 1 or None (the default for the epoch budget), got {self.grace_period!r}")
        need(self.plateau_tol is None or self.plateau_tol >= 0, f"plateau_tol must be >= 0 or None, got {self.plateau_tol}")
        need(self.tpe_startup_trials is None or (isinstance(self.tpe_startup_trials, int) and self.tpe_startup_trials >= 1),
             f"tpe_startup_trials must be an int >= 1 or None (the default for num_trials), got {self.tpe_startup_trials!r}")
        need(self.reduction_factor >= 2, f"reduction_factor must be >= 2, got {self.reduction_factor}")
        need(self.workers_per_trial >= 1, f"workers_per_trial must be >= 1, got {self.workers_per_trial}")
        need(self.gpus_per_worker >= 0, f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        need(self.cpus_per_worker > 0, f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        need(isinstance(self.resources_per_worker, dict)
             and all(isinstance(v, (int, float)) and v >= 0 for v in self.resources_per_worker.values()),
             "resources_per_worker must map resource names to amounts >= 0")
        need(not {"CPU", "GPU", "cpu", "gpu"} & set(self.resources_per_worker),
             "set CPUs and GPUs with cpus_per_worker / gpus_per_worker, not resources_per_worker")
        need(self.workers_per_trial == 1 or float(self.gpus_per_worker).is_integer(),
             f"{self.workers_per_trial} workers per trial with gpus_per_worker={self.gpus_per_worker}: "
             "several workers of one trial would share a GPU, which NCCL refuses (one GPU per rank). "
             "Use whole GPUs per worker (gpus_per_worker=1), or run one worker per trial with a "
             "fraction (workers_per_trial=1, gpus_per_worker=0.5) and pack trials on a GPU with "
             "max_concurrent")
        need(self.worker_start_timeout_s is None or self.worker_start_timeout_s > 0,
             f"worker_start_timeout_s must be > 0 or None, got {self.worker_start_timeout_s}")
        need(self.controller_failure_limit >= -1,
             f"controller_failure_limit must be >= 0 (or -1: unlimited), got {self.controller_failure_limit}")
        need(self.execution in EXECUTIONS, f"execution must be one of {EXECUTIONS}, got {self.execution!r}")
        need(self.execution != "in_process" or (self.workers_per_trial == 1),
             "execution 'in_process' runs one worker; use 'train' for workers_per_trial > 1")
        need(bool(self.storage), "storage (the store root) must be set")
        need(self.max_failures >= 0, f"max_failures must be >= 0, got {self.max_failures}")
        need(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        self._check_final_evaluation(need)

    def _check_final_evaluation(self, need) -> None:
        """Seeds, patterns, fills and splits of the final evaluation (normalised to tuples)."""
        self.train_seeds = tuple(int(s) for s in self.train_seeds)
        self.mask_seeds = tuple(int(s) for s in self.mask_seeds)
        need(len(self.train_seeds) >= 1 and len(set(self.train_seeds)) == len(self.train_seeds),
             f"train_seeds must be distinct and non-empty, got {self.train_seeds}")
        need(len(self.mask_seeds) >= 1 and len(set(self.mask_seeds)) == len(self.mask_seeds),
             f"mask_seeds must be distinct and non-empty, got {self.mask_seeds}")
        self.patterns, self.fills = tuple(self.patterns), tuple(self.fills)
        if self.eval_splits is not None:
            self.eval_splits = tuple(str(s) for s in self.eval_splits)
            need(len(self.eval_splits) >= 1 and len(set(self.eval_splits)) == len(self.eval_splits),
                 f"eval_splits must be distinct and non-empty, got {self.eval_splits}")
            need(not {"train", "valid"} & set(self.eval_splits),
                 f"eval_splits must not name the search's splits (train, valid), got {self.eval_splits}")

    def resolved_tpe_startup_trials(self) -> int:
        """TPE's start-up trials for this study."""
        return self.tpe_startup_trials or default_tpe_startup_trials(self.num_trials)

    def resolved_grace_period(self, epochs: int) -> int:
        """The grace period ASHA uses for trials of `epochs` epochs (never more than `epochs`)."""
        return min(epochs, self.grace_period or default_grace_period(epochs))

    @property
    def resolved_execution(self) -> str:
        """The execution mode actually used ("auto" resolved)."""
        if self.execution != "auto":
            return self.execution
        return "in_process" if self.workers_per_trial == 1 and self.gpus_per_worker == 0 else "train"

    @property
    def tune_storage(self) -> str:
        """Tune's storage path (absolute for local paths, as Tune requires)."""
        path = self.ray_storage_path or (f"{self.storage.rstrip('/')}/ray" if "://" in self.storage
                                         else os.path.join(self.storage, "ray"))
        return path if "://" in path else os.path.abspath(os.path.expanduser(path))

    def resolved_eval_splits(self, dataset) -> tuple[str, ...]:
        """The final evaluation's splits for `dataset` (the default resolved; missing ones are an error)."""
        splits = self.eval_splits or ("test", *(("ood",) if "ood" in dataset.splits else ()))
        missing = [s for s in splits if s not in dataset.splits]
        if missing:
            raise ValueError(f"StudySpec {self.name!r}: eval_splits {missing} are not splits of {self.dataset!r} "
                             f"(it has {sorted(dataset.splits)})")
        return splits

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def is_node_local(path: str) -> bool:
    """True for a path on the local filesystem (plain path or file://), False for s3://, gs://, ..."""
    return "://" not in path or path.startswith("file://")


class StoreNotShared(ValueError):
    """A node-local store path on a cluster whose trials can run on other machines."""


def check_store_shared(spec: StudySpec, hosts: int, autoscaling: bool) -> None:
    """Refuse a node-local store on a cluster whose trials can run on another machine.

    `hosts`: distinct machines with live Ray nodes (nodes on one machine share its disk);
    `autoscaling`: the cluster can add machines (a `ray up` cluster starts with the head alone).
    Trial rows are written by the trials themselves, so a local path there means rows scattered
    over the workers' disks and an empty selection on the driver.
    """
    if spec.shared_storage or (hosts <= 1 and not autoscaling):
        return
    local = [p for p in (spec.storage, spec.tune_storage) if is_node_local(p)]
    if local:
        where = f"{hosts} machine{'s' if hosts != 1 else ''}" + (" and an autoscaler that adds more"
                                                                if autoscaling else "")
        raise StoreNotShared(
            f"StudySpec {spec.name!r}: store path(s) {local} are on this node's disk, but the cluster "
            f"has {where}: trials on other nodes would write their rows to their own disks. Use a "
            "store every node reaches: --storage s3://your-bucket/prefix (or export AFFECTUNE_STORAGE, "
            "which cluster.yaml sets on every node); if the path is a filesystem mounted on every node "
            "(NFS, EFS), pass --shared-storage (shared_storage=True).")
