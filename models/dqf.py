"""DQF: Dual-Query Fusion for multimodal emotion recognition with incomplete modalities.

Paper: "Dual-Query Fusion" (shared/papers/004, sections 3.1-3.4; no public code). Pipeline:

    X~_m (B, T_m, D_m)  masked inputs (train: uniform ratio g_m ~ U(0,1) per modality and batch)
      -> Conv1D                      X^_m (B, T_m, d)                                   eq. 2
      -> Q-UA, per layer l:          Q^_m = LN(MHSA(Q_m) + Q_m)          (P_m, d)       eq. 3
                                     H_m  = TransformerLayer(H_m + Q^_m) (B, T_m, d)    eq. 4
      -> Q-CA, per pair ab in {ta, tv, av}, per layer:
                                     Q^_ab = LN(MHSA(Q_ab) + Q_ab)       (B, P_ab, d)   eq. 3
                                     H_a->b = Attn(Attn(Q^_ab, H_a, Q^_ab), H_b, H_b)   eq. 5-6
                                     H_ab = Linear([H_a->b, H_b->a])     (B, P_ab, d)   eq. 7
                                     H~_ab = AvgPool(H_ab)               (B, d)         eq. 8
      -> H^_ca = Pool(MHSA([H~_ta, H~_tv, H~_av, CLS]))                  (B, d)         eq. 9
      -> MLP([h_t, h_a, h_v, H~_ta, H~_tv, H~_av, H^_ca])                (B, 7d) -> out
    L_total = L_task + aux_weight * sum_{n in t,a,v,ta,tv,av,tav} L_n    (L1 or CE)      eq. 1

Decisions where the paper is silent (see docs/models.md):
  * Query lengths. Q_m has P_m = T_m slots by default (the paper's Q_m in R^{T_m x d}); a
    shorter `num_queries` is linearly interpolated to T_m frames before it is added to X^_m.
  * Eq. 5 uses the query as the *value* of an attention whose keys are H_a, which only type-checks
    when the query has as many slots as H_a has frames. We read it as: the value at key frame j is
    the query slot placed at frame j (the query resampled to T_a slots, identity when P_ab = T_a).
    The default P_ab = min(T_a, T_b) reproduces eq. 5 literally on aligned data.
  * Stacking Q-CA layers: the fused H_ab of a layer becomes the next layer's query, with a residual
    and LayerNorm (Z <- LN(Z^ + Linear([H_a->b, H_b->a]))); the paper gives no stacking rule.
  * Pooling: unimodal features are masked means of H_m over valid frames; eq. 8's AvgPool is a
    mean over the P_ab query slots; eq. 9's Pool takes the CLS output (`fusion_pool="cls"`).
Ablations of Table 4: `use_qua=False` (plain transformer encoder, no queries), `use_qca=False`
(plain cross-modal attention between H_a and H_b instead of Q-CA, no pair queries).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from affectune import MODALITIES, SHORT
from affectune.batch import Batch
from affectune.data.schema import DatasetSpec
from affectune.models._registry import register
from affectune.models.base import MERModel, ModelConfig, TrainViews
from affectune.search_spaces import grid_space, register_space
from affectune.models.layers import (
    CrossAttentionBlock, MultiHeadAttention, ResidualSelfAttention, SinusoidalPositionalEncoding,
    TaskHead, TemporalConv, TransformerEncoderLayer, fit_to_length, masked_mean,
)

PAIRS: tuple[tuple[str, str], ...] = (("text", "audio"), ("text", "vision"), ("audio", "vision"))
"""Q-CA modality pairs ta, tv, av."""

AUX_KEYS: tuple[str, ...] = ("t", "a", "v", "ta", "tv", "av", "tav")
"""The 7 auxiliary objectives of eq. 1, one per modality combination."""


def pair_key(a: str, b: str) -> str:
    return SHORT[a] + SHORT[b]


@dataclass
class DQFConfig(ModelConfig):
    """DQF hyper-parameters. `hidden` and `dropout` come from ModelConfig."""

    layers: int = 2
    """Layers of Q-UA and of Q-CA (paper: 6; Table 5 searches 2, 4, 6)."""
    heads: int = 4
    """Attention heads in every MHSA (paper: 4; Table 5 searches 2, 4, 6)."""
    ff_mult: int = 4
    """Feed-forward width of the transformer layers, as a multiple of hidden."""
    kernel_size: int = 3
    """Temporal kernel of the per-modality Conv1D (odd)."""
    aux_weight: float = 1.0
    """Weight of the sum of the 7 auxiliary losses (paper: 1.0)."""
    num_queries: int = 0
    """Q-UA query slots per modality; 0 = the modality's sequence length (paper), capped at it."""
    pair_queries: int = 0
    """Q-CA shared query slots per pair; 0 = the shorter of the pair's two sequence lengths."""
    use_qua: bool = True
    """False: Table 4's "w/o Q-UA", a plain transformer encoder without queries."""
    use_qca: bool = True
    """False: Table 4's "w/o Q-CA", plain cross-modal attention between H_a and H_b."""
    fusion_pool: str = "cls"
    """Eq. 9's Pool over [H~_ta, H~_tv, H~_av, CLS]: "cls" (the CLS output) or "mean"."""
    sinusoidal_pe: bool = False
    """Add sinusoidal positions to X^_m (the paper names none; Q-UA queries are per-frame)."""

    def __post_init__(self):
        if self.hidden < 1 or self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be positive and divisible by heads ({self.heads})")
        for name in ("layers", "heads", "ff_mult", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (keeps T frames), got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if self.num_queries < 0 or self.pair_queries < 0:
            raise ValueError(f"num_queries ({self.num_queries}) and pair_queries ({self.pair_queries}) "
                             "must be >= 0 (0 = sequence length)")
        if self.fusion_pool not in ("cls", "mean"):
            raise ValueError(f"fusion_pool must be 'cls' or 'mean', got {self.fusion_pool!r}")


class QCALayer(nn.Module):
    """One Q-CA layer for a pair (a, b): query Z (B, P, d) -> fused Z (B, P, d), eq. 3 and 5-7."""

    def __init__(self, dim: int, heads: int, dropout: float, len_a: int, len_b: int):
        super().__init__()
        self.lengths = {"a": len_a, "b": len_b}  # dataset lengths: where query slots sit on frames
        self.update = ResidualSelfAttention(dim, heads, dropout)  # eq. 3 on the shared query
        self.inner = nn.ModuleDict({"ab": MultiHeadAttention(dim, heads, dropout),
                                    "ba": MultiHeadAttention(dim, heads, dropout)})
        self.outer = nn.ModuleDict({"ab": MultiHeadAttention(dim, heads, dropout),
                                    "ba": MultiHeadAttention(dim, heads, dropout)})
        self.fuse = nn.Linear(2 * dim, dim)  # eq. 7
        self.norm = nn.LayerNorm(dim)

    def direction(self, key: str, q: torch.Tensor, h_src: torch.Tensor, v_src: torch.Tensor,
                  h_dst: torch.Tensor, v_dst: torch.Tensor, src_len: int) -> torch.Tensor:
        """H_src->dst = Attn(Attn(Q, H_src, Q), H_dst, H_dst): (B, P, d)."""
        q_on_frames = fit_to_length(q, src_len, h_src.shape[1])  # (B, T_src, d): slot at each key frame
        inner = self.inner[key](q, h_src, q_on_frames, v_src)  # (B, P, d) keys H_src, values query
        return self.outer[key](inner, h_dst, h_dst, v_dst)  # (B, P, d) keys/values H_dst

    def forward(self, z: torch.Tensor, h_a: torch.Tensor, v_a: torch.Tensor, h_b: torch.Tensor,
                v_b: torch.Tensor) -> torch.Tensor:
        q = self.update(z)  # (B, P, d)
        a2b = self.direction("ab", q, h_a, v_a, h_b, v_b, self.lengths["a"])
        b2a = self.direction("ba", q, h_b, v_b, h_a, v_a, self.lengths["b"])
        return self.norm(q + self.fuse(torch.cat([a2b, b2a], -1)))  # (B, P, d)


class QCA(nn.Module):
    """Q-CA for one pair: learned shared query (P, d) through `layers` QCALayers -> H~_ab (B, d)."""

    def __init__(self, dim: int, heads: int, dropout: float, layers: int, len_a: int, len_b: int, slots: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(slots, dim) * 0.02)  # Q_ab (P, d)
        self.layers = nn.ModuleList(QCALayer(dim, heads, dropout, len_a, len_b) for _ in range(layers))

    def forward(self, h_a, v_a, h_b, v_b) -> torch.Tensor:
        z = self.query.unsqueeze(0).expand(h_a.shape[0], -1, -1)  # (B, P, d)
        for layer in self.layers:
            z = layer(z, h_a, v_a, h_b, v_b)
        return z.mean(1)  # eq. 8 AvgPool over the query slots -> (B, d)


class PlainCrossModal(nn.Module):
    """Table 4's "w/o Q-CA": each modality's frames attend to the other's; no query.

    b reads a for `layers` CrossAttentionBlocks (and a reads b); each stream is mean-pooled over
    its valid frames, then concat -> Linear (pooling commutes with eq. 7's Linear) -> (B, d)."""

    def __init__(self, dim: int, heads: int, dropout: float, layers: int, ff_mult: int):
        super().__init__()
        self.a2b = nn.ModuleList(CrossAttentionBlock(dim, heads, dropout, ff_mult) for _ in range(layers))
        self.b2a = nn.ModuleList(CrossAttentionBlock(dim, heads, dropout, ff_mult) for _ in range(layers))
        self.fuse = nn.Linear(2 * dim, dim)

    def forward(self, h_a, v_a, h_b, v_b) -> torch.Tensor:
        s_b, s_a = h_b, h_a  # (B, T_b, d), (B, T_a, d)
        for blk_ab, blk_ba in zip(self.a2b, self.b2a):
            s_b, s_a = blk_ab(s_b, v_b, h_a, v_a), blk_ba(s_a, v_a, h_b, v_b)
        return self.fuse(torch.cat([masked_mean(s_b, v_b), masked_mean(s_a, v_a)], -1))  # (B, d)


@register("dqf")
class DQF(MERModel):
    """Dual-Query Fusion; trains on masked inputs only (uniform ratio per modality and batch)."""

    config_class = DQFConfig

    def __init__(self, config: DQFConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        self.proj = nn.ModuleDict({m: TemporalConv(spec.dims[m], d, c.kernel_size) for m in MODALITIES})
        self.pos = SinusoidalPositionalEncoding(d) if c.sinusoidal_pe else None
        # Q-UA: per-modality queries (P_m, d), one query update and one transformer layer per layer
        if c.use_qua:
            slots = {m: min(c.num_queries or spec.seq_lens[m], spec.seq_lens[m]) for m in MODALITIES}
            self.queries = nn.ParameterDict({m: nn.Parameter(torch.randn(max(slots[m], 1), d) * 0.02)
                                             for m in MODALITIES})
            self.query_updates = nn.ModuleDict({m: nn.ModuleList(ResidualSelfAttention(d, c.heads, c.dropout)
                                                                 for _ in range(c.layers)) for m in MODALITIES})
        self.encoders = nn.ModuleDict({m: nn.ModuleList(TransformerEncoderLayer(d, c.heads, c.dropout, c.ff_mult)
                                                        for _ in range(c.layers)) for m in MODALITIES})
        # Q-CA (or the plain cross-modal ablation) per pair
        if c.use_qca:
            self.pairs = nn.ModuleDict({
                pair_key(a, b): QCA(d, c.heads, c.dropout, c.layers, spec.seq_lens[a], spec.seq_lens[b],
                                    max(c.pair_queries or min(spec.seq_lens[a], spec.seq_lens[b]), 1))
                for a, b in PAIRS})
        else:
            self.pairs = nn.ModuleDict({pair_key(a, b): PlainCrossModal(d, c.heads, c.dropout, c.layers, c.ff_mult)
                                        for a, b in PAIRS})
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)  # [CLS] of eq. 9
        self.fusion = ResidualSelfAttention(d, c.heads, c.dropout)  # MHSA of eq. 9
        self.aux_heads = nn.ModuleDict({k: TaskHead(d, spec, d, c.dropout) for k in AUX_KEYS})
        self.head = TaskHead(len(AUX_KEYS) * d, spec, d, c.dropout)  # on unimodal+bimodal+trimodal

    # -- training policy and losses ---------------------------------------------------------------
    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        from affectune import missing  # DQF trains only on masked inputs (sec. 3.1)

        return TrainViews(batch, {"masked": missing.uniform_ratio(batch, generator)})

    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        """Eq. 1 on each view, averaged over views: loss = task + aux_weight * sum of 7 aux losses."""
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("loss", "task", *(f"aux_{k}" for k in AUX_KEYS))}
        for view in views.trained().values():
            out = self(view)
            task = self.task_loss(out["pred"], view.label)
            aux = {k: self.task_loss(out["aux"][k], view.label) for k in AUX_KEYS}
            parts["loss"].append(task + self.config.aux_weight * torch.stack(list(aux.values())).sum())
            parts["task"].append(task)
            for k, v in aux.items():
                parts[f"aux_{k}"].append(v)
        losses = {k: torch.stack(v).mean() for k, v in parts.items()}
        return {k: (v if k == "loss" else v.detach()) for k, v in losses.items()}

    # -- forward --------------------------------------------------------------------------------
    def encode(self, batch: Batch, m: str) -> torch.Tensor:
        """Conv1D + Q-UA (or plain transformer) for modality m: (B, T_m, D_m) -> H_m (B, T_m, d)."""
        valid = batch.valid[m]  # (B, T_m)
        h = self.proj[m](batch.features(m), valid)  # X^_m (B, T_m, d), eq. 2
        if self.pos is not None:
            h = self.pos(h)
        q = self.queries[m].unsqueeze(0) if self.config.use_qua else None  # (1, P_m, d)
        for layer_idx, encoder in enumerate(self.encoders[m]):
            if q is not None:
                q = self.query_updates[m][layer_idx](q)  # Q^_m (1, P_m, d), eq. 3
                h = h + fit_to_length(q, self.spec.seq_lens[m], h.shape[1])  # X^ + Q^, eq. 4
            h = encoder(h, valid)  # (B, T_m, d)
        return h

    def forward(self, batch: Batch) -> dict:
        H = {m: self.encode(batch, m) for m in MODALITIES}
        feats = {SHORT[m]: masked_mean(H[m], batch.valid[m]) for m in MODALITIES}  # 3 x (B, d)
        for a, b in PAIRS:
            feats[pair_key(a, b)] = self.pairs[pair_key(a, b)](H[a], batch.valid[a], H[b], batch.valid[b])
        tokens = torch.stack([feats["ta"], feats["tv"], feats["av"],
                              self.cls.expand(batch.size, -1, -1).squeeze(1)], 1)  # (B, 4, d)
        fused = self.fusion(tokens)  # (B, 4, d), eq. 9
        feats["tav"] = fused[:, -1] if self.config.fusion_pool == "cls" else fused.mean(1)  # (B, d)
        aux = {k: self.aux_heads[k](feats[k]) for k in AUX_KEYS}
        pred = self.head(torch.cat([feats[k] for k in AUX_KEYS], -1))  # (B,) or (B, C)
        return {"pred": pred, "aux": aux}


# ----------------------------------------------------------------------------- presets and spaces

DQF.presets = {
    # Sec. 4.2: momentum SGD, lr 1e-5, batch 64, 100 epochs, 6 layers, 4 heads.
    "paper": {"optimizer": "sgd", "momentum": 0.9, "lr": 1e-5, "batch_size": 64, "epochs": 100,
              "model_config": {"layers": 6, "heads": 4}},
}
DQF.study_defaults = {
    # a few minutes on 2 cores: a narrow model (24 is divisible by every head count searched)
    "epochs": 6, "batch_size": 32, "lr": 2e-3, "model_config": {"hidden": 24},
}

TABLE5_PAIRS = ((2, 2), (2, 4), (4, 4), (6, 4), (6, 6))
"""(layers, heads) pairs of the paper's Table 5."""

grid_space("dqf", "paper", [{"layers": l, "heads": h} for l, h in TABLE5_PAIRS],
           description="DQF Table 5: (layers, heads) in 2/2, 2/4, 4/4, 6/4, 6/6")
grid_space("dqf", "grid", [{"layers": l, "heads": h} for l in (2, 4, 6) for h in (2, 4, 6)],
           description="layers in {2,4,6} x heads in {2,4,6} (a superset of Table 5)")


@register_space("dqf", "wide", description="layers, heads, head width, lr, dropout, aux-loss weight",
                helpers=("head_dim",))
def dqf_wide(trial) -> dict:
    trial.suggest_int("layers", low=1, high=6)
    heads = trial.suggest_categorical("heads", (2, 4, 6))
    # hidden = heads * head_dim: every drawn combination is valid (hidden % heads == 0).
    head_dim = trial.suggest_categorical("head_dim", (4, 8, 16))
    trial.suggest_float("lr", low=1e-4, high=3e-2, log=True)
    trial.suggest_float("dropout", low=0.0, high=0.5)
    trial.suggest_float("aux_weight", low=0.0, high=2.0)
    return {"hidden": heads * head_dim}
