"""The interface every model implements, so one training loop serves every method.

The loop calls, in this order (every hook is a no-op by default):

    model.on_fit_start(FitContext)                   # once, before the first step: train split
    per epoch:
        per batch:
            views = model.train_policy(batch, generator)         # TrainViews
            for step in range(model.steps_per_batch):            # optimiser steps per batch
                losses = model.training_losses(views, step)      # {"loss": total, ...}
        model.calibrate(EvalContext)                 # validation only (e.g. CIDer's tau)
        validation scoring, checkpoint               # uses the calibrated state
        extra = model.on_epoch_end(epoch, EpochContext)   # under torch.no_grad(); may log floats
    evaluation: model.predict(batch)

What a model may read where:
* `training_losses`: everything in the views, including the frame-level `Batch.dropped` masks
  (reconstruction losses on masked positions need them).
* `forward` / `predict` (validation, test grid): features, padding masks (`valid`), tokens and
  the modality-level `Batch.available` flags; never `Batch.dropped` (it is all-False there, and a
  test forbids reading it), so no model can peek at the evaluation masks.
* State a hook computes (train statistics, a calibrated scalar, sampling probabilities) must live
  in registered buffers (`self.register_buffer`), so `save_checkpoint` / `load_checkpoint`
  reproduce predictions exactly and data-parallel ranks agree.

Method knowledge lives in the model file: its config dataclass, `presets` (a `paper` preset
among them), `study_defaults` (the base config its study scripts start from), its search spaces
(`affectune.search_spaces.register_space` / `grid_space`), its policy, losses and hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from affectune.batch import Batch
from affectune.data.schema import DatasetSpec


@dataclass
class ModelConfig:
    """Fields every model shares. Subclasses add their own, each with a one-line doc."""

    hidden: int = 64
    """Model width d."""
    dropout: float = 0.1
    """Dropout probability."""

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- what the hooks receive


@dataclass
class TrainViews:
    """What a train-time policy produces for one batch, and `training_losses` consumes.

    `complete` is the batch as loaded (no train-time drops). `views` are the named inputs the
    method trains on, e.g. {"masked": ...} (DQF), {"a": ..., "b": ...} (UMDF's two heterogeneous
    views). `combination` and `rate` optionally carry per-view (B,) tensors: the sampled
    available-combination ids (`affectune.missing.AVAILABLE_COMBINATIONS` order) or drop rates.
    """

    complete: Batch
    """The batch without train-time masks."""
    views: dict[str, Batch] = field(default_factory=dict)
    """Named views the method trains on; empty means "train on `complete`"."""
    combination: dict[str, torch.Tensor] = field(default_factory=dict)
    """View name -> (B,) long combination id of each sample, where the policy sampled one."""
    rate: dict[str, torch.Tensor] = field(default_factory=dict)
    """View name -> (B,) float drop rate of each sample, where the policy drew one."""

    def __getitem__(self, name: str) -> Batch:
        if name == "complete":
            return self.complete
        try:
            return self.views[name]
        except KeyError:
            raise KeyError(f"no view {name!r}; views are {['complete', *self.views]}") from None

    def trained(self) -> dict[str, Batch]:
        """The views to train on: the named views, or {"complete": complete} when there are none."""
        return dict(self.views) or {"complete": self.complete}

    @property
    def size(self) -> int:
        return self.complete.size


PredictFn = Callable[[Batch], torch.Tensor]


@dataclass
class EvalContext:
    """Validation data for `calibrate` and `on_epoch_end`; never holds the test split.

    `predict(data, fn)` runs `fn(batch) -> (B, k)` over a whole split under inference mode and
    returns (N, k) float32 on CPU, rows in order; under data parallelism every rank computes a
    shard and all ranks receive the same full tensor (so decisions agree across ranks).
    `score(data, pred)` are the task metrics of (N, out_dim) predictions on `data`.
    """

    valid: Any
    """The validation split (affectune.loader.TensorSplit), complete inputs."""
    valid_masked: Any
    """The fixed masked copy of the validation split the loop scores as `valmask_*`."""
    task: str
    """"regression" or "classification"."""
    select_metric: str
    """Key of the selection metric, e.g. "valmask_mae"."""
    direction: str
    """"max" or "min" for the selection metric."""
    predict: Callable[[Any, PredictFn], torch.Tensor]
    """(split, fn) -> (N, k) float32 CPU tensor; see above."""
    score: Callable[[Any, torch.Tensor], dict]
    """(split, (N, out_dim) predictions) -> {metric: float}."""

    def selection_score(self, pred_valid: torch.Tensor, pred_masked: torch.Tensor) -> float:
        """The selection metric of predictions on `valid` and `valid_masked` (what the loop selects on)."""
        prefix, metric = self.select_metric.split("_", 1)
        data, pred = (self.valid, pred_valid) if prefix == "val" else (self.valid_masked, pred_masked)
        return float(self.score(data, pred)[metric])


@dataclass
class EpochContext(EvalContext):
    """`EvalContext` plus the epoch's reported metrics (floats), for `on_epoch_end`."""

    metrics: dict[str, float] = field(default_factory=dict)
    """This epoch's train and validation metrics, as reported."""


@dataclass
class FitContext:
    """What `on_fit_start` sees: the train split (read only), the dataset spec and the train config."""

    train: Any
    """The train split (affectune.loader.TensorSplit): features, valid, lengths, label, tokens, ids."""
    spec: DatasetSpec
    """Shapes, task and vocabulary of the dataset."""
    config: dict
    """The TrainConfig as a dict."""
    dataset_name: str = ""
    """The dataset's source string (for error messages)."""


# ----------------------------------------------------------------------------- baseline policies

TRAIN_MISSING = ("none", "uniform_ratio")
"""Train-time policies a complete-input baseline may opt into (its `train_missing` field)."""


def baseline_train_views(policy: str, batch: Batch, generator: torch.Generator) -> TrainViews:
    """Views for a baseline's `train_missing` field: the complete batch, or DQF's uniform ratio."""
    if policy == "none":
        return TrainViews(batch)
    if policy == "uniform_ratio":
        from affectune import missing  # lazy: models import without the protocol module loaded

        return TrainViews(batch, {"masked": missing.uniform_ratio(batch, generator)})
    raise ValueError(f"unknown train_missing policy {policy!r}; expected one of {TRAIN_MISSING}")


# ----------------------------------------------------------------------------- the base class


class MERModel(nn.Module):
    """Base class. Subclasses set `config_class` and implement `forward`."""

    name: str = ""  # set by @register
    config_class: type = ModelConfig
    presets: ClassVar[dict[str, dict]] = {}
    """Named partial train configs (top-level TrainConfig keys plus "model_config"), e.g. "paper"."""
    study_defaults: ClassVar[dict] = {}
    """Base train config of this method's study scripts (width, batch size, lr, epochs, ...)."""

    def __init__(self, config: ModelConfig, spec: DatasetSpec):
        super().__init__()
        self.config = config
        self.spec = spec

    @classmethod
    def preset(cls, name: str, dataset: str | None = None) -> dict:
        """The partial train config of preset `name` (a method may pick per `dataset` source)."""
        try:
            return cls.presets[name]
        except KeyError:
            raise KeyError(f"model {cls.name!r} has no preset {name!r}; presets: {sorted(cls.presets)}") from None

    # -- lifecycle hooks (see the module docstring for the order) --------------------------------
    def on_fit_start(self, ctx: FitContext) -> None:
        """Once before the first step, with the train split. Store results in buffers."""

    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        """The train-time missing policy. Default: the complete batch only."""
        return TrainViews(batch)

    steps_per_batch: int = 1
    """Optimiser steps per batch; step k back-propagates `training_losses(views, step=k)`."""

    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        """Losses for one optimiser step; "loss" is the total that is back-propagated.

        Default: the task loss on each trained view, averaged."""
        losses = [self.task_loss(self(v)["pred"], v.label) for v in views.trained().values()]
        total = torch.stack(losses).mean()
        return {"loss": total, "task": total.detach()}

    def param_groups(self, train_config: dict) -> list[dict]:
        """Optimiser parameter groups; a group may set its own "lr" / "weight_decay". Default: one."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def calibrate(self, ctx: EvalContext) -> None:
        """After each epoch's training, before validation scoring; sees only validation data."""

    def on_epoch_end(self, epoch: int, ctx: EpochContext) -> dict[str, float] | None:
        """After validation scoring and the checkpoint, under no_grad. Returned floats are logged
        with the epoch's metrics (e.g. sampling probabilities); they do not affect selection."""
        return None

    # -- what differs per method -------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Returns at least {"pred": (B,) for regression or (B, C) logits}."""
        raise NotImplementedError  # abstract: every registered model overrides it

    def predict(self, batch: Batch) -> torch.Tensor:
        """Evaluation output: (B,) scores or (B, C) class scores."""
        return self(batch)["pred"]

    # -- shared helpers ------------------------------------------------------------------------
    @property
    def is_regression(self) -> bool:
        return self.spec.task == "regression"

    def task_loss(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """L1 for regression (MMSA's convention), cross-entropy for classification."""
        if self.is_regression:
            return F.l1_loss(pred.reshape(-1), label.float())
        return F.cross_entropy(pred, label.long())

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
