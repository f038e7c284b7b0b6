"""Late fusion baseline: one encoder and one head per modality, predictions averaged.

The classic decision-level fusion of multimodal sentiment analysis (e.g. the "late fusion"
rows of Zadeh et al., "Tensor Fusion Network", EMNLP 2017). Per modality m:

    X_m (B, T_m, D_m) -> Conv1D -> GELU -> Conv1D -> GELU    (B, T_m, d)
                      -> masked mean over valid frames        (B, d)
                      -> MLP head                             y_m: (B,) or (B, C) logits
    pred = sum_m w_m * y_m over the modalities with at least one valid frame

w is uniform (`fusion="mean"`) or softmax of 3 learned logits (`fusion="learned"`), renormalised
over the modalities a sample has (a sample with no frames at all in any modality falls back to all
three). Availability is read from the padding masks only: dropped frames are inside the length,
so a modality whose frames were all dropped still counts (the model cannot know they are gone).
Trained on complete inputs by default; `train_missing="uniform_ratio"` switches on DQF's policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from affectune import MODALITIES
from affectune.batch import Batch
from affectune.data.schema import DatasetSpec
from affectune.models._registry import register
from affectune.models.base import TRAIN_MISSING, MERModel, ModelConfig, TrainViews, baseline_train_views
from affectune.models.layers import TaskHead, TemporalConv, masked_mean


@dataclass
class LateFusionConfig(ModelConfig):
    """Late fusion hyper-parameters. `hidden` and `dropout` come from ModelConfig."""

    kernel_size: int = 3
    """Temporal kernel of both Conv1D layers of each encoder (odd)."""
    fusion: str = "mean"
    """How the three heads' outputs combine: "mean" or "learned" (softmax weights)."""
    train_missing: str = "none"
    """Train-time missing policy: "none" (complete inputs) or "uniform_ratio" (DQF's)."""

    def __post_init__(self):
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.fusion not in ("mean", "learned"):
            raise ValueError(f"fusion must be 'mean' or 'learned', got {self.fusion!r}")
        if self.train_missing not in TRAIN_MISSING:
            raise ValueError(f"train_missing must be one of {TRAIN_MISSING}, got {self.train_missing!r}")


class ModalityEncoder(nn.Module):
    """(B, T, D_m), valid (B, T) -> (B, d): two padding-aware Conv1Ds and a masked mean."""

    def __init__(self, in_dim: int, dim: int, kernel_size: int, dropout: float):
        super().__init__()
        self.conv1 = TemporalConv(in_dim, dim, kernel_size, bias=True)
        self.conv2 = TemporalConv(dim, dim, kernel_size, bias=True)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.conv1(x, valid)))  # (B, T, d)
        h = self.act(self.conv2(h, valid))  # (B, T, d)
        return masked_mean(h, valid)  # (B, d)


@register("late_fusion")
class LateFusion(MERModel):
    """Per-modality encoders and heads; the prediction is a (weighted) mean of the heads."""

    config_class = LateFusionConfig

    def __init__(self, config: LateFusionConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        self.encoders = nn.ModuleDict({m: ModalityEncoder(spec.dims[m], d, c.kernel_size, c.dropout)
                                       for m in MODALITIES})
        self.heads = nn.ModuleDict({m: TaskHead(d, spec, d, c.dropout) for m in MODALITIES})
        self.fusion_logits = nn.Parameter(torch.zeros(len(MODALITIES))) if c.fusion == "learned" else None

    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        return baseline_train_views(self.config.train_missing, batch, generator)

    def forward(self, batch: Batch) -> dict:
        outs = torch.stack([self.heads[m](self.encoders[m](batch.features(m), batch.valid[m]))
                            for m in MODALITIES], 1)  # (B, 3) or (B, 3, C)
        has = torch.stack([batch.valid[m].any(1) for m in MODALITIES], 1)  # (B, 3)
        has = has | ~has.any(1, keepdim=True)  # nothing anywhere: use all three
        prior = (self.fusion_logits.softmax(0) if self.fusion_logits is not None
                 else torch.full((len(MODALITIES),), 1.0 / len(MODALITIES), device=outs.device))
        w = prior * has.to(outs.dtype)  # (B, 3)
        w = w / w.sum(1, keepdim=True)
        w = w if outs.dim() == 2 else w.unsqueeze(-1)  # (B, 3[, 1])
        return {"pred": (w * outs).sum(1), "per_modality": outs}


LateFusion.study_defaults = {
    # the same small budget as DQF's study defaults, so comparisons start from equal footing
    "epochs": 6, "batch_size": 32, "lr": 2e-3, "model_config": {"hidden": 24},
}
