"""MulT: Multimodal Transformer for unaligned multimodal language sequences (baseline).

Paper: Tsai, Bai, Liang, Kolter, Morency, Salakhutdinov, "Multimodal Transformer for Unaligned
Multimodal Language Sequences", ACL 2019. A complete-modality model; DQF's Table 4 also uses it
("Q-UA w/ MulT"). Pipeline, for each target modality m in {t, a, v}:

    X_m (B, T_m, D_m) -> Conv1D -> * sqrt(d) + sinusoidal positions  Z_m (B, T_m, d)
    for each source s != m: Z_{s->m} = CrossModalTransformer(Z_m reads Z_s)  (B, T_m, d)
    Z_m* = SelfAttentionTransformer([Z_{s1->m}, Z_{s2->m}])                   (B, T_m, 2d)
    h_m = Pool(Z_m*)  (last valid frame as in MulT, or masked mean)          (B, 2d)
    pred = MLP([h_t, h_a, h_v])                                              (B, 6d) -> out

Cross-modal blocks are pre-norm (MulT's): x += CrossAttn(LN(x), LN(ctx)); x += FFN(LN(x)).
Trained on complete inputs by default; `train_missing="uniform_ratio"` switches on DQF's policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from affectune import MODALITIES
from affectune.batch import Batch
from affectune.data.schema import DatasetSpec
from affectune.models._registry import register
from affectune.models.base import TRAIN_MISSING, MERModel, ModelConfig, TrainViews, baseline_train_views
from affectune.models.layers import (
    CrossAttentionBlock, SinusoidalPositionalEncoding, TaskHead, TemporalConv, TransformerEncoder,
    pool, zero_padding,
)


@dataclass
class MulTConfig(ModelConfig):
    """MulT hyper-parameters. `hidden` (per-stream width d) and `dropout` come from ModelConfig."""

    heads: int = 4
    """Attention heads in every block."""
    layers: int = 2
    """Depth of each directional cross-modal transformer (MulT: 4-5)."""
    self_layers: int = 1
    """Depth of the per-target self-attention transformer over the two cross streams (MulT: 3)."""
    ff_mult: int = 4
    """Feed-forward width as a multiple of the block width."""
    kernel_size: int = 1
    """Temporal kernel of the per-modality Conv1D projection (odd; MulT: 1)."""
    embed_dropout: float = 0.1
    """Dropout on the projected, position-encoded inputs."""
    pool: str = "last"
    """Temporal pooling of each target stream: "last" valid frame (MulT) or "mean"."""
    train_missing: str = "none"
    """Train-time missing policy: "none" (complete inputs) or "uniform_ratio" (DQF's)."""

    def __post_init__(self):
        if self.hidden < 1 or self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be positive and divisible by heads ({self.heads})")
        for name in ("heads", "layers", "self_layers", "ff_mult", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (keeps T frames), got {self.kernel_size}")
        for name in ("dropout", "embed_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {self.pool!r}")
        if self.train_missing not in TRAIN_MISSING:
            raise ValueError(f"train_missing must be one of {TRAIN_MISSING}, got {self.train_missing!r}")


class CrossModalTransformer(nn.Module):
    """Target frames (B, T_m, d) read a source (B, T_s, d) through `layers` pre-norm blocks."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float, ff_mult: int):
        super().__init__()
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, dropout, ff_mult, norm_first=True)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, x_valid, src, src_valid) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, x_valid, src, src_valid)
        return zero_padding(self.norm(x), x_valid)  # (B, T_m, d)


@register("mult")
class MulT(MERModel):
    """Directional cross-modal transformers (6), per-target self-attention, pooled, MLP head."""

    config_class = MulTConfig

    def __init__(self, config: MulTConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        self.proj = nn.ModuleDict({m: TemporalConv(spec.dims[m], d, c.kernel_size) for m in MODALITIES})
        self.pos = SinusoidalPositionalEncoding(d)
        self.embed_drop = nn.Dropout(c.embed_dropout)
        # "src_to_tgt" -> cross-modal transformer: a->t, v->t, t->a, v->a, t->v, a->v
        self.cross = nn.ModuleDict({
            f"{s}_to_{m}": CrossModalTransformer(d, c.heads, c.layers, c.dropout, c.ff_mult)
            for m in MODALITIES for s in MODALITIES if s != m})
        self.self_attn = nn.ModuleDict({m: TransformerEncoder(2 * d, c.heads, c.self_layers, c.dropout,
                                                              c.ff_mult, norm_first=True) for m in MODALITIES})
        self.head = TaskHead(6 * d, spec, 6 * d, c.dropout)

    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        return baseline_train_views(self.config.train_missing, batch, generator)

    def forward(self, batch: Batch) -> dict:
        d = self.config.hidden
        z = {}
        for m in MODALITIES:
            x = self.proj[m](batch.features(m), batch.valid[m]) * math.sqrt(d)  # (B, T_m, d)
            z[m] = zero_padding(self.embed_drop(self.pos(x)), batch.valid[m])
        pooled = []
        for m in MODALITIES:
            streams = [self.cross[f"{s}_to_{m}"](z[m], batch.valid[m], z[s], batch.valid[s])
                       for s in MODALITIES if s != m]  # 2 x (B, T_m, d)
            h = self.self_attn[m](torch.cat(streams, -1), batch.valid[m])  # (B, T_m, 2d)
            pooled.append(pool(h, batch.valid[m], self.config.pool))  # (B, 2d)
        return {"pred": self.head(torch.cat(pooled, -1))}  # (B,) or (B, C)


MulT.study_defaults = {
    # the same small budget as DQF's study defaults, so comparisons start from equal footing
    "epochs": 6, "batch_size": 32, "lr": 2e-3, "model_config": {"hidden": 24},
}
