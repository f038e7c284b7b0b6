"""The interface every model implements, so one training loop serves every method.

The training loop, per batch:
    views = model.train_policy(batch, generator)        # list of masked Batches
    losses = model.training_losses(batch, views)        # dict, "loss" is the total
and after each epoch `model.on_epoch_end(epoch, stats)`. Evaluation calls `model.predict(batch)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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


TRAIN_MISSING = ("none", "uniform_ratio")
"""Train-time policies a complete-input baseline may opt into (its `train_missing` field)."""


def baseline_train_views(policy: str, batch: Batch, generator: torch.Generator) -> list[Batch]:
    """Views for a baseline's `train_missing` field: the complete batch, or DQF's uniform ratio."""
    if policy == "none":
        return [batch]
    if policy == "uniform_ratio":
        from affectune import missing  # lazy: models import without the protocol module loaded

        return [missing.uniform_ratio(batch, generator)]
    raise ValueError(f"unknown train_missing policy {policy!r}; expected one of {TRAIN_MISSING}")


class MERModel(nn.Module):
    """Base class. Subclasses set `config_class` and implement `forward`."""

    name: str = ""  # set by @register
    config_class: type = ModelConfig

    def __init__(self, config: ModelConfig, spec: DatasetSpec):
        super().__init__()
        self.config = config
        self.spec = spec

    # -- what differs per method -------------------------------------------------------------
    def train_policy(self, batch: Batch, generator: torch.Generator) -> list[Batch]:
        """The train-time missing policy: the masked views this method trains on.

        Default: the complete batch (models trained on complete inputs)."""
        return [batch]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Returns at least {"pred": (B,) for regression or (B, C) logits}."""
        raise NotImplementedError  # abstract: every registered model overrides it

    def training_losses(self, batch: Batch, views: list[Batch]) -> dict[str, torch.Tensor]:
        """Losses for one step; "loss" is the total that is back-propagated.

        Default: the task loss on each view, averaged."""
        losses = [self.task_loss(self(v)["pred"], v.label) for v in views]
        total = torch.stack(losses).mean()
        return {"loss": total, "task": total.detach()}

    def predict(self, batch: Batch) -> torch.Tensor:
        """Evaluation output: (B,) scores or (B, C) class scores."""
        return self(batch)["pred"]

    def on_epoch_end(self, epoch: int, stats: dict) -> None:
        """Hook after each epoch with validation statistics (e.g. MCULoRA's DPFT)."""

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
