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
Variants of Table 4 (sec. 4.5.1), each a config field:
  * `unimodal="transformer"` is "w/o Q-UA": "Q-UA is replaced by a Transformer encoder". No queries;
    to keep the comparison about the query mechanism and not about order information, the frames
    get positions instead (`plain_positions`: a learned per-frame table shaped like Q_m, default).
  * `cross_modal="concat"` is "w/o Q-CA": "Q-CA is replaced by a Transformer that takes concatenated
    unimodal features as input". With no Q-CA there are no bimodal features, so eq. 9 has nothing
    to fuse; the Transformer's [CLS] output is the trimodal feature:
        [CLS; H_t + e_t; H_a + e_a; H_v + e_v]  (B, 1 + T_t + T_a + T_v, d) -> Transformer -> h_tav
    (e_m: learned modality-type embeddings), the final MLP reads [h_t, h_a, h_v, h_tav] (B, 4d) and
    eq. 1 sums the 4 auxiliary losses that exist (t, a, v, tav).
  * `cross_modal="mult"` is "Q-UA w/ MulT": "Q-CA is replaced by MuT". Per pair, MulT's pre-norm
    cross-modal transformers (models/mult.py) replace eq. 5: H_a->b = CM(H_b reads H_a) (B, T_b, d)
    and H_b->a; each is mean-pooled over valid frames, concat -> Linear (eq. 7) -> H~_ab (B, d);
    eq. 9 and the 7-feature MLP are unchanged.
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
    MultiHeadAttention, ResidualSelfAttention, SinusoidalPositionalEncoding, TaskHead, TemporalConv,
    TransformerEncoder, TransformerEncoderLayer, fit_to_length, masked_mean,
)
from affectune.models.mult import CrossModalTransformer

PAIRS: tuple[tuple[str, str], ...] = (("text", "audio"), ("text", "vision"), ("audio", "vision"))
"""Q-CA modality pairs ta, tv, av."""

AUX_KEYS: tuple[str, ...] = ("t", "a", "v", "ta", "tv", "av", "tav")
"""The 7 auxiliary objectives of eq. 1, one per modality combination."""

CONCAT_AUX_KEYS: tuple[str, ...] = ("t", "a", "v", "tav")
"""The objectives of Table 4's "w/o Q-CA": no Q-CA, so no bimodal features."""

UNIMODAL = ("qua", "transformer")
CROSS_MODAL = ("qca", "mult", "concat")
PLAIN_POSITIONS = ("learned", "sinusoidal", "none")


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
    """Weight of the sum of the auxiliary losses (7; 4 with cross_modal="concat") (paper: 1.0)."""
    num_queries: int = 0
    """Q-UA query slots per modality; 0 = the modality's sequence length (paper), capped at it."""
    pair_queries: int = 0
    """Q-CA shared query slots per pair; 0 = the shorter of the pair's two sequence lengths."""
    unimodal: str = "qua"
    """Unimodal encoder: "qua" (paper) or "transformer" (Table 4's "w/o Q-UA": no queries)."""
    plain_positions: str = "learned"
    """Positions of the "w/o Q-UA" encoder in place of Q_m: "learned" (shaped like Q_m), "sinusoidal", "none"."""
    cross_modal: str = "qca"
    """Cross-modal encoder: "qca" (paper), "mult" (Table 4's "Q-UA w/ MulT"), "concat" ("w/o Q-CA")."""
    fusion_pool: str = "cls"
    """Eq. 9's Pool (and "concat"'s): "cls" (the CLS output) or "mean" (of the 4 tokens; "concat": valid frames)."""
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
        for name, choices in (("unimodal", UNIMODAL), ("cross_modal", CROSS_MODAL),
                              ("plain_positions", PLAIN_POSITIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")


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


class MulTPair(nn.Module):
    """Table 4's "Q-UA w/ MulT" for a pair (a, b): MulT's cross-modal transformers replace eq. 5.

    b's frames read a (and a's read b) through `layers` pre-norm blocks; each stream is mean-pooled
    over its valid frames (eq. 8's AvgPool), then concat -> Linear (eq. 7; the Linear commutes with
    the pooling) -> H~_ab (B, d)."""

    def __init__(self, dim: int, heads: int, dropout: float, layers: int, ff_mult: int):
        super().__init__()
        self.a2b = CrossModalTransformer(dim, heads, layers, dropout, ff_mult)
        self.b2a = CrossModalTransformer(dim, heads, layers, dropout, ff_mult)
        self.fuse = nn.Linear(2 * dim, dim)

    def forward(self, h_a, v_a, h_b, v_b) -> torch.Tensor:
        a2b = self.a2b(h_b, v_b, h_a, v_a)  # (B, T_b, d): b reads a
        b2a = self.b2a(h_a, v_a, h_b, v_b)  # (B, T_a, d): a reads b
        return self.fuse(torch.cat([masked_mean(a2b, v_b), masked_mean(b2a, v_a)], -1))  # (B, d)


class ConcatTransformer(nn.Module):
    """Table 4's "w/o Q-CA": one Transformer over the concatenated unimodal sequences -> h_tav (B, d).

    Input [CLS; H_t + e_t; H_a + e_a; H_v + e_v] (B, 1 + T_t + T_a + T_v, d); e_m tells the
    Transformer which modality a frame comes from (positions within a modality are already in H_m).
    Output: the CLS frame (`pool="cls"`) or the mean over valid unimodal frames (`"mean"`)."""

    def __init__(self, dim: int, heads: int, dropout: float, layers: int, ff_mult: int, pool: str):
        super().__init__()
        self.pool = pool
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # (1, 1, d)
        self.modality = nn.Parameter(torch.randn(len(MODALITIES), dim) * 0.02)  # e_m (3, d)
        self.encoder = TransformerEncoder(dim, heads, layers, dropout, ff_mult)

    def forward(self, H: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        B = H[MODALITIES[0]].shape[0]
        frames = torch.cat([H[m] + self.modality[i] for i, m in enumerate(MODALITIES)], 1)  # (B, sum T_m, d)
        frames_valid = torch.cat([valid[m] for m in MODALITIES], 1)  # (B, sum T_m)
        x = torch.cat([self.cls.expand(B, -1, -1), frames], 1)  # (B, 1 + sum T_m, d)
        x_valid = torch.cat([frames_valid.new_ones(B, 1), frames_valid], 1)
        out = self.encoder(x, x_valid)  # (B, 1 + sum T_m, d)
        return out[:, 0] if self.pool == "cls" else masked_mean(out[:, 1:], frames_valid)  # (B, d)


@register("dqf")
class DQF(MERModel):
    """Dual-Query Fusion; trains on masked inputs only (uniform ratio per modality and batch)."""

    config_class = DQFConfig

    def __init__(self, config: DQFConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        self.aux_keys = CONCAT_AUX_KEYS if c.cross_modal == "concat" else AUX_KEYS
        self.proj = nn.ModuleDict({m: TemporalConv(spec.dims[m], d, c.kernel_size) for m in MODALITIES})
        self.pos = SinusoidalPositionalEncoding(d) if c.sinusoidal_pe else None
        self._build_unimodal(c, spec)
        self._build_cross_modal(c, spec)
        self.aux_heads = nn.ModuleDict({k: TaskHead(d, spec, d, c.dropout) for k in self.aux_keys})
        self.head = TaskHead(len(self.aux_keys) * d, spec, d, c.dropout)  # on uni-, bi-, trimodal features

    def _build_unimodal(self, c: DQFConfig, spec: DatasetSpec) -> None:
        """Q-UA's queries (P_m, d) and their per-layer updates, or the "w/o Q-UA" positions."""
        d = c.hidden
        slots = {m: max(min(c.num_queries or spec.seq_lens[m], spec.seq_lens[m]), 1) for m in MODALITIES}
        if c.unimodal == "qua":
            self.queries = nn.ParameterDict({m: nn.Parameter(torch.randn(slots[m], d) * 0.02) for m in MODALITIES})
            self.query_updates = nn.ModuleDict({m: nn.ModuleList(ResidualSelfAttention(d, c.heads, c.dropout)
                                                                 for _ in range(c.layers)) for m in MODALITIES})
        elif c.plain_positions == "learned":  # same shape, init and frame placement as Q_m
            self.positions = nn.ParameterDict({m: nn.Parameter(torch.randn(slots[m], d) * 0.02) for m in MODALITIES})
        elif c.plain_positions == "sinusoidal":
            self.plain_sinusoidal = SinusoidalPositionalEncoding(d)
        self.encoders = nn.ModuleDict({m: nn.ModuleList(TransformerEncoderLayer(d, c.heads, c.dropout, c.ff_mult)
                                                        for _ in range(c.layers)) for m in MODALITIES})

    def _build_cross_modal(self, c: DQFConfig, spec: DatasetSpec) -> None:
        """Q-CA per pair and eq. 9's fusion, or one of Table 4's replacements."""
        d = c.hidden
        if c.cross_modal == "concat":  # "w/o Q-CA": no pairs, no eq. 9
            self.concat = ConcatTransformer(d, c.heads, c.dropout, c.layers, c.ff_mult, c.fusion_pool)
            return
        if c.cross_modal == "qca":
            self.pairs = nn.ModuleDict({
                pair_key(a, b): QCA(d, c.heads, c.dropout, c.layers, spec.seq_lens[a], spec.seq_lens[b],
                                    max(c.pair_queries or min(spec.seq_lens[a], spec.seq_lens[b]), 1))
                for a, b in PAIRS})
        else:  # "mult"
            self.pairs = nn.ModuleDict({pair_key(a, b): MulTPair(d, c.heads, c.dropout, c.layers, c.ff_mult)
                                        for a, b in PAIRS})
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)  # [CLS] of eq. 9
        self.fusion = ResidualSelfAttention(d, c.heads, c.dropout)  # MHSA of eq. 9

    # -- training policy and losses ---------------------------------------------------------------
    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        from affectune import missing  # DQF trains only on masked inputs (sec. 3.1)

        return TrainViews(batch, {"masked": missing.uniform_ratio(batch, generator)})

    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        """Eq. 1 on each view, averaged over views: loss = task + aux_weight * sum of the aux losses."""
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("loss", "task", *(f"aux_{k}" for k in self.aux_keys))}
        for view in views.trained().values():
            out = self(view)
            task = self.task_loss(out["pred"], view.label)
            aux = {k: self.task_loss(out["aux"][k], view.label) for k in self.aux_keys}
            parts["loss"].append(task + self.config.aux_weight * torch.stack(list(aux.values())).sum())
            parts["task"].append(task)
            for k, v in aux.items():
                parts[f"aux_{k}"].append(v)
        losses = {k: torch.stack(v).mean() for k, v in parts.items()}
        return {k: (v if k == "loss" else v.detach()) for k, v in losses.items()}

    # -- forward --------------------------------------------------------------------------------
    def encode(self, batch: Batch, m: str) -> torch.Tensor:
        """Conv1D + Q-UA (or the "w/o Q-UA" transformer) for modality m: (B, T_m, D_m) -> H_m (B, T_m, d)."""
        valid, T = batch.valid[m], self.spec.seq_lens[m]  # (B, T_m)
        h = self.proj[m](batch.features(m), valid)  # X^_m (B, T_m, d), eq. 2
        if self.pos is not None:
            h = self.pos(h)
        qua = self.config.unimodal == "qua"
        if not qua:
            h = self.add_plain_positions(h, m)
        q = self.queries[m].unsqueeze(0) if qua else None  # (1, P_m, d)
        for layer_idx, encoder in enumerate(self.encoders[m]):
            if q is not None:
                q = self.query_updates[m][layer_idx](q)  # Q^_m (1, P_m, d), eq. 3
                h = h + fit_to_length(q, T, h.shape[1])  # X^ + Q^, eq. 4
            h = encoder(h, valid)  # (B, T_m, d)
        return h

    def add_plain_positions(self, h: torch.Tensor, m: str) -> torch.Tensor:
        """"w/o Q-UA": positions added once before the first layer (a transformer's), (B, T_m, d)."""
        if self.config.plain_positions == "learned":
            return h + fit_to_length(self.positions[m], self.spec.seq_lens[m], h.shape[1])
        if self.config.plain_positions == "sinusoidal":
            return self.plain_sinusoidal(h)
        return h  # "none": the confounded comparison, kept to measure what positions alone give

    def cross_modal(self, H: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bimodal features H~_ab (B, d) and the trimodal H^_ca (B, d), keyed ta, tv, av, tav."""
        if self.config.cross_modal == "concat":
            return {"tav": self.concat(H, valid)}
        feats = {pair_key(a, b): self.pairs[pair_key(a, b)](H[a], valid[a], H[b], valid[b]) for a, b in PAIRS}
        B = H[MODALITIES[0]].shape[0]
        tokens = torch.stack([feats["ta"], feats["tv"], feats["av"], self.cls.expand(B, -1, -1).squeeze(1)], 1)
        fused = self.fusion(tokens)  # (B, 4, d), eq. 9
        feats["tav"] = fused[:, -1] if self.config.fusion_pool == "cls" else fused.mean(1)  # (B, d)
        return feats

    def forward(self, batch: Batch) -> dict:
        H = {m: self.encode(batch, m) for m in MODALITIES}
        feats = {SHORT[m]: masked_mean(H[m], batch.valid[m]) for m in MODALITIES}  # 3 x (B, d)
        feats.update(self.cross_modal(H, batch.valid))
        aux = {k: self.aux_heads[k](feats[k]) for k in self.aux_keys}
        pred = self.head(torch.cat([feats[k] for k in self.aux_keys], -1))  # (B,) or (B, C)
        return {"pred": pred, "aux": aux}


# ----------------------------------------------------------------------------- presets and spaces

DQF.presets = {
    # Sec. 4.2: momentum SGD, lr 1e-5, batch 64, 100 epochs, 6 layers, 4 heads.
    # The paper gives no width; 48 is divisible by every head count of Table 5 (2, 4, 6), so the
    # preset combines with the `paper` space.
    "paper": {"optimizer": "sgd", "momentum": 0.9, "lr": 1e-5, "batch_size": 64, "epochs": 100,
              "model_config": {"layers": 6, "heads": 4, "hidden": 48}},
}
DQF.presets["demo"] = {
    # `python -m affectune demo`: a 1-layer DQF that learns in under a minute on 2 cores
    "model_config": {"hidden": 32, "layers": 1}, "epochs": 8, "batch_size": 32, "lr": 2e-3, "patience": None,
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


TABLE4_VARIANTS = {"DQF": {"unimodal": "qua", "cross_modal": "qca"},
                   "w/o Q-UA": {"unimodal": "transformer", "cross_modal": "qca"},
                   "w/o Q-CA": {"unimodal": "qua", "cross_modal": "concat"},
                   "Q-UA w/ MulT": {"unimodal": "qua", "cross_modal": "mult"}}
"""The rows of the paper's Table 4, as config overrides."""

grid_space("dqf", "table4", list(TABLE4_VARIANTS.values()),
           description="DQF Table 4: DQF, w/o Q-UA, w/o Q-CA, Q-UA w/ MulT")
