"""The one training loop: a function of a plain config dict, single-process or data parallel.

    outcome = train_loop({"model": "<model>", "dataset": "synthetic:mosi", "epochs": 20}, reporter)

The loop knows nothing method-specific: it calls the model's hooks (models/base.py) in order,

    model.on_fit_start(FitContext)                         # train split, once
    per epoch, per batch:
        views = model.train_policy(batch, generator)       # TrainViews
        for step in range(model.steps_per_batch):
            losses = model.training_losses(views, step)    # {"loss": total, ...}; one optimiser step
    model.calibrate(EvalContext)                           # validation only
    validation scoring -> selection -> checkpoint
    model.on_epoch_end(epoch, EpochContext)                # may log extra floats

Each epoch it validates on complete inputs (`val_<metric>`) and on a fixed, seeded masked copy of
the validation split (`valmask_<metric>`, identical masks for every method), keeps the best
checkpoint by the selection metric (by default the task's primary metric on the masked set, so
selection rewards robustness), stops early after `patience` epochs without improvement, and calls
`reporter(metrics, checkpoint_dir_or_None)`; `metrics["stop"]` is True on the last epoch the loop
runs (the one copy of the stopping rule). The test split is never read here. A caller may also
pass `should_stop` (e.g. Tune stopping an in-process trial): the loop checks it between batches
and raises `TrainingStopped`, so the thread that runs it leaves torch code within one batch.

Data parallel: if torch.distributed is initialised (e.g. inside Ray Train workers), each rank
trains on its DistributedSampler shard through DistributedDataParallel, validation is sharded and
all-gathered so every rank computes identical metrics (hence identical calibration, selection and
stopping decisions), rank 0 writes checkpoints, and every rank calls the reporter once per epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from affectune import code_version
from affectune.data.schema import Dataset, DatasetSpec
from affectune.loader import EpochBatches, TensorSplit, masked_copy, preload
from affectune.metrics import METRICS, PRIMARY_METRIC, compute_metrics, metric_direction
from affectune.missing import FILLS, PATTERNS, frame_mask, parse_subset
from affectune.models.base import EpochContext, EvalContext, FitContext, PredictFn

Reporter = Callable[[dict, "str | None"], None]


class TrainingStopped(Exception):
    """The caller's `should_stop()` became true: the loop ended between two batches (no result)."""


OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT_FILE = "best.pt"
CHECKPOINT_FORMAT = 1
RESUME_FILE = "latest.pt"
"""Written next to best.pt after every epoch (rank 0): what a restarted run continues from."""


@dataclass
class TrainConfig:
    """Everything one training run needs; a plain dict in and out (`from_dict`, `to_dict`)."""

    model: str
    """Registered model name (affectune.models.list_models()); required."""
    model_config: dict = field(default_factory=dict)
    """Overrides of the model's config dataclass fields; unknown fields are an error."""
    dataset: str = "synthetic:mosi"
    """Dataset source string, e.g. "synthetic:mosi?scale=0.1" or "mmsa:/path/aligned_50.pkl"."""
    seed: int = 0
    """Seeds model init, shuffling, dropout and the train-time missing policy."""
    epochs: int = 20
    """Maximum number of epochs."""
    batch_size: int = 64
    """Samples per optimisation step summed over all data-parallel workers."""
    eval_batch_size: int = 512
    """Samples per forward pass during validation (memory only, results are unaffected)."""
    lr: float = 1e-3
    """Learning rate."""
    optimizer: str = "adam"
    """"adam", "adamw" or "sgd" (with `momentum`)."""
    momentum: float = 0.9
    """SGD momentum (ignored by adam/adamw)."""
    weight_decay: float = 0.0
    """L2 penalty (adam, sgd) or decoupled weight decay (adamw)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; None disables clipping."""
    patience: int | None = 10
    """Stop after this many epochs without improvement of the selection metric; None never stops early."""
    select_metric: str | None = None
    """Selection metric: "valmask_<m>" or "val_<m>" (a bare "<m>" means "valmask_<m>"); None = the
    task's primary metric on the masked validation set."""
    val_mask_subset: str = "tav"
    """Modalities (letters t/a/v) whose frames are dropped in the masked validation set."""
    val_mask_rate: float = 0.5
    """Frame drop rate of the masked validation set (each frame independently for "random")."""
    val_mask_pattern: str = "random"
    """Mask pattern of the masked validation set: "random" or "block"."""
    val_mask_fill: str = "zero"
    """Fill of dropped frames in the masked validation set: "zero" or "gaussian"."""
    val_mask_seed: int = 12345
    """Mask seed of the masked validation set (differs from the test seeds 0, 1, 2 on purpose)."""
    device: str = "auto"
    """"auto" (a GPU Ray reserved, or cuda:LOCAL_RANK under torchrun; else the CPU), "cpu" or "cuda"
    (affectune.devices has the rule)."""
    num_threads: int | None = None
    """torch intra-op threads for this process; None leaves torch's default."""
    checkpoint_dir: str | None = None
    """Where the best checkpoint (best.pt) is written; None = a fresh temporary directory."""
    find_unused_parameters: bool = True
    """DDP only: tolerate parameters without gradient in a step (methods that route by modality)."""
    precision: str = "fp32"
    """"fp32", "bf16" or "fp16": autocast dtype of the training forward and losses (fp16 adds a
    gradient scaler); weights, optimiser state, metrics and checkpoints stay fp32."""
    allow_tf32: bool = True
    """On GPUs with TF32 (Ampere and later), let fp32 matmuls and convolutions use it."""
    compile: bool = False
    """torch.compile the model's forward (opt-in: compilation costs time up front)."""
    length_buckets: int = 0
    """0 = uniformly shuffled batches; k > 0 = batches of similar-length samples (each run of
    k x batch_size shuffled samples sorted by length, batches shuffled; seeded per epoch), so
    trimming removes most padding: faster attention, less random batch composition."""

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")

        need(isinstance(self.model, str) and bool(self.model), f"model must be a name, got {self.model!r}")
        need(isinstance(self.model_config, dict), f"model_config must be a dict, got {type(self.model_config).__name__}")
        need(isinstance(self.dataset, str) and ":" in self.dataset,
             f"dataset must be a source string like 'synthetic:mosi', got {self.dataset!r}")
        for name in ("seed", "epochs", "batch_size", "eval_batch_size", "val_mask_seed"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an int, got {value!r}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or None, got {self.grad_clip}")
        need(self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
             f"patience must be an int >= 1 or None, got {self.patience!r}")
        if self.select_metric is not None:
            metric = self.select_metric.split("_", 1)[1] if self.select_metric.startswith(("val_", "valmask_")) \
                else self.select_metric
            try:
                metric_direction(metric)
            except KeyError as e:
                raise ValueError(f"TrainConfig: select_metric {self.select_metric!r}: {e.args[0]}") from None
        parse_subset(self.val_mask_subset)  # raises a clear ValueError
        need(0.0 < self.val_mask_rate <= 1.0, f"val_mask_rate must be in (0, 1], got {self.val_mask_rate}")
        need(not (parse_subset(self.val_mask_subset) == parse_subset("tav") and self.val_mask_rate == 1.0),
             "val_mask_rate 1.0 on every modality leaves nothing to predict from")
        need(self.val_mask_pattern in PATTERNS, f"val_mask_pattern must be one of {PATTERNS}, got {self.val_mask_pattern!r}")
        need(self.val_mask_fill in FILLS, f"val_mask_fill must be one of {FILLS}, got {self.val_mask_fill!r}")
        need(self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}")
        need(self.num_threads is None or self.num_threads >= 1, f"num_threads must be >= 1 or None, got {self.num_threads}")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(isinstance(self.length_buckets, int) and not isinstance(self.length_buckets, bool)
             and self.length_buckets >= 0, f"length_buckets must be an int >= 0 (0 = off), got {self.length_buckets!r}")

    @classmethod
    def from_dict(cls, config: dict) -> "TrainConfig":
        """From a plain dict; unknown keys are an error naming the valid ones."""
        if isinstance(config, TrainConfig):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"train config must be a dict, got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown train config key(s) {unknown}; valid keys are {sorted(known)}")
        if "model" not in config:
            raise ValueError("train config has no 'model': name a registered model (affectune.models.list_models())")
        return cls(**config)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def selection(self, task: str) -> tuple[str, str]:
        """(metrics key of the selection metric, "max" or "min")."""
        name = self.select_metric or PRIMARY_METRIC[task]
        key = name if name.startswith(("val_", "valmask_")) else f"valmask_{name}"
        metric = key.split("_", 1)[1]
        info_task = METRICS[metric].task if metric in METRICS else "classification"
        if info_task != task:
            raise ValueError(f"TrainConfig: select_metric {name!r} is a {info_task} metric but the dataset "
                             f"task is {task}")
        return key, metric_direction(metric)


@dataclass
class TrainOutcome:
    """What one training run produced."""

    best_epoch: int
    """Epoch (1-based) whose weights are in the checkpoint."""
    best_objective: float
    """The selection metric at best_epoch."""
    select_metric: str
    """Key of the selection metric in the per-epoch metrics, e.g. "valmask_mae"."""
    best_metrics: dict
    """All per-epoch metrics at best_epoch."""
    checkpoint_path: str | None
    """The best checkpoint (rank 0; None on other ranks)."""
    num_parameters: int
    """Trainable parameters of the model."""
    history: list[dict]
    """Per-epoch metrics, as reported."""
    wall_time_s: float
    """Wall time of the whole run including data loading."""
    epochs_run: int
    """Epochs actually run (< config epochs after early stopping)."""
    stopped_early: bool
    """True if patience ran out."""
    dataset_fingerprint: str
    """Content hash of the dataset trained on."""
    config: dict = field(default_factory=dict)
    """The full TrainConfig as a dict."""


# ----------------------------------------------------------------------------- helpers


class _TrainStep(nn.Module):
    """forward(views, step) = model.training_losses(views, step).

    DDP synchronises gradients only for work done inside the wrapped module's forward, so the
    loop calls this wrapper (DDP(_TrainStep(model))) for every optimiser step of a batch rather
    than model.training_losses directly.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, views, step: int):
        return self.model.training_losses(views, step)


def distributed_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(name: str) -> torch.device:
    """This process's device: Ray's GPU reservation in Ray workers, LOCAL_RANK under torchrun
    (rule and Ray source references: affectune.devices)."""
    from affectune.devices import resolve

    return resolve(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stream_seed(*keys: int) -> int:
    """A 63-bit seed derived from integers (e.g. (seed, rank)); distinct keys give unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def check_param_groups(model: nn.Module, groups: list[dict]) -> list[dict]:
    """The model's parameter groups, checked: every trainable parameter in exactly one group."""
    seen: dict[int, int] = {}
    for k, group in enumerate(groups):
        group["params"] = list(group["params"])
        for p in group["params"]:
            if id(p) in seen:
                raise ValueError(f"{type(model).__name__}.param_groups: a parameter is in groups {seen[id(p)]} and {k}")
            seen[id(p)] = k
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"{type(model).__name__}.param_groups leaves trainable parameters out: {missing[:5]}")
    return groups


def build_optimizer(cfg: TrainConfig, groups) -> torch.optim.Optimizer:
    """The configured optimiser over parameter groups (or plain parameters); a group's own "lr" /
    "weight_decay" override the config's."""
    groups = list(groups)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": [p for p in groups if p.requires_grad]}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def masked_validation(data: TensorSplit, cfg: TrainConfig) -> TensorSplit:
    """The fixed masked validation set: masks from the protocol, keyed on sample ids and val_mask_seed,
    so every method, trial and worker sees the same inputs."""
    dropped = {}
    for m in sorted(parse_subset(cfg.val_mask_subset)):
        T = data.features[m].shape[1]
        mask = frame_mask(data.ids, data.lengths[m], T, m, cfg.val_mask_rate,
                          seed=cfg.val_mask_seed, pattern=cfg.val_mask_pattern)  # (N, T_m)
        dropped[m] = torch.from_numpy(mask).to(data.device)
    return masked_copy(data, dropped, fill=cfg.val_mask_fill, seed=cfg.val_mask_seed)


@torch.inference_mode()
def predict_split(model, data: TensorSplit, batch_size: int, rank: int = 0, world_size: int = 1,
                  fn: PredictFn | None = None) -> torch.Tensor:
    """(N, k) float32 predictions on CPU of `data`, rows in order; `fn(batch)` (default
    `model.predict`) returns (B,) or (B, k).

    With several ranks each predicts a contiguous shard and the shards are all-gathered, so every
    rank returns the same full tensor.
    """
    fn = fn or model.predict
    bounds = np.linspace(0, len(data), world_size + 1).astype(np.int64)
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    parts = [fn(data.batch(slice(s, min(s + batch_size, hi))).trimmed()).float()
             for s in range(lo, hi, batch_size)]
    parts = [p.reshape(p.shape[0], -1) for p in parts]
    width = parts[0].shape[1] if parts else 0
    if world_size > 1:  # a rank with no rows learns the width from the others
        width_t = torch.tensor([width], device=data.device)
        dist.all_reduce(width_t, op=dist.ReduceOp.MAX)
        width = int(width_t)
    local = torch.cat(parts) if parts else torch.zeros(0, width, device=data.device)  # (n_rank, k)
    if world_size == 1:
        return local.cpu()
    size = int(np.max(np.diff(bounds)))
    padded = torch.zeros(size, width, device=local.device)
    padded[:local.shape[0]] = local
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:int(bounds[r + 1] - bounds[r])] for r, g in enumerate(gathered)]).cpu()


def score(task: str, data: TensorSplit, pred: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Metrics of (N, out_dim) predictions against the split's labels."""
    y = data.label.cpu().numpy()
    p = pred[:, 0].numpy() if task == "regression" else pred.numpy()
    return compute_metrics(task, y, p, num_classes=num_classes if task == "classification" else None)


def _all_reduce_sum(values: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _better(value: float, best: float | None, direction: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if direction == "max" else value < best


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, model, cfg: TrainConfig, *, fingerprint: str, epoch: int,
                    metrics: dict) -> Path:
    """Write atomically (temp file + rename) a torch file of plain containers and tensors only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": model.name,
        "model_config": model.config.to_dict(),
        "spec": dataclasses.asdict(model.spec),
        "config": cfg.to_dict(),
        "dataset_fingerprint": fingerprint,
        "code_version": code_version(),
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    return _atomic_save(payload, path)


def _atomic_save(payload: dict, path: Path) -> Path:
    """torch.save to a temp file in the same directory, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents, loaded with weights_only=True (no code in the file is executed)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or holding non-tensor objects
        raise ValueError(f"checkpoint {str(path)!r} cannot be read safely: {e}") from None
    missing = [k for k in ("state_dict", "model", "model_config", "spec", "config") if k not in payload]
    if not isinstance(payload, dict) or missing:
        raise ValueError(f"checkpoint {str(path)!r} is not an affectune checkpoint (missing {missing})")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig dict) from a checkpoint file or its directory."""
    from affectune.models import build_model

    payload = read_checkpoint(path)
    spec = DatasetSpec(**payload["spec"])
    model = build_model(payload["model"], dict(payload["model_config"]), spec)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), dict(payload["config"])


# ----------------------------------------------------------------------------- mid-run resume

# Config keys that may differ between the interrupted run and its continuation (where and how
# it runs, not what it computes).
_RESUME_FREE_KEYS = ("checkpoint_dir", "num_threads", "device", "eval_batch_size")


def save_resume_state(run: "_Run", selection: "_Selection", epoch: int, history: list[dict]) -> Path:
    """Rank 0, after every epoch: weights with the model's buffers (its hook state), optimiser,
    gradient scaler, best-so-far and early-stopping counter, and the history so far. RNG streams
    need no state here: `_seed_epoch` derives them from (seed, rank, epoch) for every rank."""
    payload = {
        "format": CHECKPOINT_FORMAT, "epoch": int(epoch), "config": run.cfg.to_dict(),
        "dataset_fingerprint": run.dataset.fingerprint,
        "state_dict": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
        "selection": {"best": selection.best, "best_epoch": selection.best_epoch,
                      "best_metrics": selection.best_metrics, "since_best": selection.since_best},
        "history": history,
    }
    return _atomic_save(payload, run.ckpt_dir / RESUME_FILE)


def restore_resume_state(run: "_Run", selection: "_Selection", path: str | Path) -> tuple[int, list[dict]]:
    """Load a `save_resume_state` file into `run` and `selection`: (last finished epoch, history).
    Refuses a file written for another dataset or another computation."""
    path = Path(path)
    path = path / RESUME_FILE if path.is_dir() else path
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("dataset_fingerprint") != run.dataset.fingerprint:
        raise ValueError(f"resume state {str(path)!r} was written for dataset "
                         f"{state.get('dataset_fingerprint')}, not {run.dataset.fingerprint}")
    mine, theirs = run.cfg.to_dict(), dict(state.get("config", {}))
    differ = sorted(k for k in mine if k not in _RESUME_FREE_KEYS and mine[k] != theirs.get(k))
    if differ:
        raise ValueError(f"resume state {str(path)!r} was written with a different config ({differ})")
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    for key, value in state["selection"].items():
        setattr(selection, key, value)
    return int(state["epoch"]), list(state["history"])


def _seed_epoch(run: "_Run", epoch: int) -> None:
    """Dropout and train-policy streams from (seed, rank, epoch): a run resumed at any epoch, on
    any rank, draws exactly what the uninterrupted run would have drawn."""
    torch.manual_seed(_stream_seed(run.cfg.seed, run.rank, 1, epoch))
    run.policy_gen.manual_seed(_stream_seed(run.cfg.seed, run.rank, 2, epoch))


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """Everything one training run holds, built once by `_prepare` (names for the loop's steps)."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    dataset: Dataset
    train_data: TensorSplit
    val_data: TensorSplit
    val_masked: TensorSplit
    model: nn.Module
    step: nn.Module  # _TrainStep, DDP-wrapped under data parallelism
    optimizer: torch.optim.Optimizer
    policy_gen: torch.Generator
    batches: EpochBatches
    select_key: str
    direction: str
    ckpt_dir: Path | None
    scaler: torch.amp.GradScaler
    should_stop: Callable[[], bool] | None = None

    def check_stop(self, epoch: int) -> None:
        """Raise TrainingStopped when the caller asked the loop to stop (single-process runs only:
        under data parallelism every rank must take part in each collective, so no rank leaves alone)."""
        if self.should_stop is not None and self.should_stop():
            raise TrainingStopped(f"stop requested during epoch {epoch}")

    def autocast(self):
        """Mixed precision for the training forward and losses (a no-op context for fp32)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @property
    def ckpt_path(self) -> Path | None:
        return self.ckpt_dir / CHECKPOINT_FILE if self.ckpt_dir is not None else None

    def predict(self, data: TensorSplit, fn: PredictFn | None = None) -> torch.Tensor:
        # clone() outside inference mode: hooks may keep the result or copy it into buffers
        return predict_split(self.model, data, self.cfg.eval_batch_size, self.rank, self.world, fn).clone()

    def score(self, data: TensorSplit, pred: torch.Tensor) -> dict[str, float]:
        return score(self.dataset.task, data, pred, self.model.spec.num_classes)

    def eval_context(self, cls=EvalContext, **extra) -> EvalContext:
        return cls(valid=self.val_data, valid_masked=self.val_masked, task=self.dataset.task,
                   select_metric=self.select_key, direction=self.direction, predict=self.predict,
                   score=self.score, **extra)


@dataclass
class _Selection:
    """Best-so-far of the selection metric and the early-stopping counter."""

    direction: str
    patience: int | None
    best: float | None = None
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    since_best: int = 0

    def update(self, epoch: int, objective: float) -> bool:
        """Record this epoch's objective; True if it is the new best."""
        improved = _better(objective, self.best, self.direction)
        if improved:
            self.best, self.best_epoch, self.since_best = objective, epoch, 0
        else:
            self.since_best += 1
        return improved

    def should_stop(self, epoch: int, epochs: int) -> bool:
        """The stopping rule: max epochs reached, or `patience` epochs without improvement."""
        return epoch >= epochs or (self.patience is not None and self.since_best >= self.patience)


def _prepare(cfg: TrainConfig, dataset: Dataset | None) -> _Run:
    """Seeds, data, model (after its fit-start hook), DDP wrapper, optimiser and batch order."""
    from affectune.models import build_model

    rank, world = distributed_info()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} data-parallel workers")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.allow_tf32
    seed_everything(cfg.seed)
    if dataset is None:
        from affectune.data import load

        dataset = load(cfg.dataset)
    select_key, direction = cfg.selection(dataset.task)
    train_data, val_data = preload(dataset, "train", device), preload(dataset, "valid", device)
    model = build_model(cfg.model, dict(cfg.model_config), dataset.spec()).to(device)  # same init on every rank
    with torch.no_grad():  # before DDP: buffers it fills are identical on every rank (same data)
        model.on_fit_start(FitContext(train=train_data, spec=model.spec, config=cfg.to_dict(),
                                      dataset_name=dataset.source))
    if cfg.compile:
        model.compile()  # the forward only: hooks and losses stay eager Python
    step: nn.Module = _TrainStep(model)
    if world > 1:
        step = nn.parallel.DistributedDataParallel(step, find_unused_parameters=cfg.find_unused_parameters)
    optimizer = build_optimizer(cfg, check_param_groups(model, model.param_groups(cfg.to_dict())))
    torch.manual_seed(_stream_seed(cfg.seed, rank, 1))  # dropout differs per rank, reproducibly
    policy_gen = torch.Generator(device=device).manual_seed(_stream_seed(cfg.seed, rank, 2))
    batches = EpochBatches(train_data, cfg.batch_size // world, seed=cfg.seed, rank=rank, world_size=world,
                           length_buckets=cfg.length_buckets)
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if rank == 0 and ckpt_dir is None:
        ckpt_dir = Path(tempfile.mkdtemp(prefix="affectune-ckpt-"))
    return _Run(cfg, rank, world, device, dataset, train_data, val_data, masked_validation(val_data, cfg),
                model, step, optimizer, policy_gen, batches, select_key, direction,
                ckpt_dir if rank == 0 else None,
                torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"))


def _optimizer_step(run: _Run, loss: torch.Tensor) -> None:
    """Backward and step; with fp16 the scaler scales the loss and skips steps with inf gradients."""
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()


def _train_epoch(run: _Run, epoch: int) -> dict[str, float]:
    """One pass over this rank's shard; returns sample-weighted mean losses over all ranks."""
    run.model.train()
    _seed_epoch(run, epoch)
    run.batches.set_epoch(epoch)
    sums: dict[str, torch.Tensor] = {}
    seen = torch.zeros((), device=run.device)
    for batch in run.batches:
        run.check_stop(epoch)
        views = run.model.train_policy(batch, run.policy_gen)
        for k in range(run.model.steps_per_batch):
            with run.autocast():
                losses = run.step(views, k)
            _optimizer_step(run, losses["loss"].float())
            # Accumulate on-device (no per-step .item() sync); a later step's key gets a suffix.
            for key, v in losses.items():
                if v.ndim == 0:
                    name = key if k == 0 else f"{key}_step{k}"
                    sums[name] = sums.get(name, 0.0) + v.detach().float() * batch.size
        seen += batch.size
    keys = sorted(sums)
    reduced = _all_reduce_sum(torch.stack([sums[k] for k in keys] + [seen]).float(), run.world).cpu()
    train = {("train_loss" if k == "loss" else f"train_{k}"): float(reduced[i] / reduced[-1])
             for i, k in enumerate(keys)}
    if not math.isfinite(train["train_loss"]):
        raise FloatingPointError(f"training diverged: train loss is {train['train_loss']} at epoch {epoch} "
                                 f"(model {run.cfg.model!r}, lr {run.cfg.lr})")
    return train


def _validate(run: _Run) -> dict[str, float]:
    """Calibrate on validation, then the `val_*` and `valmask_*` metrics of the calibrated model."""
    run.model.eval()
    with torch.no_grad():
        run.model.calibrate(run.eval_context())
    metrics: dict[str, float] = {}
    for prefix, data in (("val", run.val_data), ("valmask", run.val_masked)):
        metrics.update({f"{prefix}_{k}": v for k, v in run.score(data, run.predict(data)).items()})
    return metrics


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_epoch(run: _Run, epoch: int, selection: _Selection) -> tuple[dict, str | None]:
    """Train, validate, select, checkpoint, end-of-epoch hook: (reported metrics, checkpoint dir)."""
    epoch_start, epoch_cpu = time.perf_counter(), time.process_time()
    train = _train_epoch(run, epoch)
    _synchronize(run.device)
    train_time, train_cpu = time.perf_counter() - epoch_start, time.process_time() - epoch_cpu
    metrics: dict[str, Any] = {"epoch": epoch, **train, **_validate(run)}
    objective = float(metrics[run.select_key])
    improved = selection.update(epoch, objective)
    metrics.update(objective=objective, best_objective=selection.best if selection.best is not None else math.nan,
                   best_epoch=selection.best_epoch, train_time_s=train_time, train_cpu_s=train_cpu)
    saved = None
    if improved and run.ckpt_path is not None:
        save_checkpoint(run.ckpt_path, run.model, run.cfg, fingerprint=run.dataset.fingerprint, epoch=epoch,
                        metrics=metrics)
        saved = str(run.ckpt_dir)
    with torch.no_grad():
        extra = run.model.on_epoch_end(epoch, run.eval_context(EpochContext, metrics=dict(metrics))) or {}
    metrics.update({k: float(v) for k, v in extra.items()})
    metrics.update(epoch_time_s=time.perf_counter() - epoch_start, epoch_cpu_s=time.process_time() - epoch_cpu,
                   stop=selection.should_stop(epoch, run.cfg.epochs))
    if improved:
        selection.best_metrics = dict(metrics)
    return metrics, saved


def train_loop(config: dict, reporter: Reporter | None = None, *, dataset: Dataset | None = None,
               resume_from: str | Path | None = None, should_stop: Callable[[], bool] | None = None
               ) -> TrainOutcome:
    """Train one config; see the module docstring. `dataset` skips loading `config["dataset"]`
    (tests, benchmarks and callers that already hold it). `resume_from` (a `latest.pt` or the
    directory holding it) continues an interrupted run after its last finished epoch; the
    reporter sees only the epochs run here, `history` holds all of them. `should_stop` (checked
    before every batch; single-process runs only) ends the run with `TrainingStopped`."""
    started = time.perf_counter()
    cfg = TrainConfig.from_dict(config)
    run = _prepare(cfg, dataset)
    if should_stop is not None:
        if run.world > 1:
            raise ValueError("should_stop is for single-process runs: under data parallelism a rank "
                             "that stops alone would leave the others waiting in a collective")
        run.should_stop = should_stop
    selection = _Selection(run.direction, cfg.patience)
    done, history = restore_resume_state(run, selection, resume_from) if resume_from else (0, [])
    finished = bool(history) and bool(history[-1].get("stop"))
    for epoch in range(done + 1, cfg.epochs + 1 if not finished else done + 1):
        metrics, saved = _run_epoch(run, epoch, selection)
        history.append(dict(metrics))
        if run.ckpt_dir is not None:
            save_resume_state(run, selection, epoch, history)
        if reporter is not None:
            reporter(dict(metrics), saved)
        if metrics["stop"]:
            break
    if selection.best_epoch == 0:
        raise FloatingPointError(f"no epoch produced a finite {run.select_key}; nothing was selected")
    return TrainOutcome(
        best_epoch=selection.best_epoch, best_objective=float(selection.best), select_metric=run.select_key,
        best_metrics=selection.best_metrics, checkpoint_path=str(run.ckpt_path) if run.ckpt_path else None,
        num_parameters=run.model.num_parameters(), history=history,
        wall_time_s=time.perf_counter() - started, epochs_run=len(history),
        stopped_early=len(history) < cfg.epochs, dataset_fingerprint=run.dataset.fingerprint,
        config=cfg.to_dict(),
    )
