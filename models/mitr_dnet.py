"""MITR-DNet: Modality-Invariant Bidirectional Temporal Representation Distillation Network.

Paper: X. Wang, L. Wang, Y. Yu, X. Jiao, "Modality-Invariant Bidirectional Temporal Representation
Distillation Network for Missing Multimodal Sentiment Analysis", arXiv 2501.05474
(shared/papers/003, a summary; the authors' model file is not public, see shared/methods.md).
One network; the complete view is the teacher, a masked view the student. For one view:

    X_m (B, T_m, D_m)
      -> unimodal encoder E_m: padding-aware Conv1D to F filters             (B, T_m, F)
      -> MIB-TRL, shared by the three modalities (the modality-invariant subspace), levels i=1..L:
           gate_i(h) = tanh(W_f *_{2^(i-1)} h) * sigmoid(W_g *_{2^(i-1)} h)   causal, kernel 2
           forward stream   f_i = f_{i-1} + gate_i(f_{i-1}),           f_0 = E_m(X_m)
           backward stream  b_i = R(forward stream of R(f_0))_i,      R = time reversal
           level output     z_i = f_i + b_i                                    (B, T_m, F)
           Z_m = [z_1; ...; z_L]                                               (B, T_m, L*F)
      -> text-centric Transformer fusion (width d):
           P_a = text slots of SelfAttn([Z_t; Z_a]),  P_v = text slots of SelfAttn([Z_t; Z_v])
           Y_va = CrossAttn(P_a reads P_v),  Y_av = CrossAttn(P_v reads P_a)  (B, T_t, d)
           pred = head_va(mean Y_va) + head_av(mean Y_av)      the two auxiliary outputs summed
Training (`training_losses`, s = student = masked view, t = teacher = complete view, sg = stop-grad):
    L = task(s) + teacher_task_weight * task(t)                        L1 (regression) or CE
      + distill_weight * (dist(Z^s, sg Z^t) + dist(Y^s, sg Y^t))       (paper: 0.3)
      + simsiam_weight * (1 - cos(pred(proj(z^s_m)), sg proj(z^t_m)))  z_m = mean_T Z_m
      + recon_weight * SmoothL1(dec_m(Z^s_m), X_m) on the student's dropped frames only

Decisions where the paper is silent (see docs/models.md, "MITR-DNet"):
  * Time, not channels, is reversed (the authors' code flips the channel axis: a bug). R reverses
    each sample within its valid length (frame t < L_i -> L_i - 1 - t; padding stays at the end),
    so padding never lands at the start of the backward stream. With padding re-zeroed before
    every convolution a reversal of the padded length would give the same valid frames, but only
    because zeros equal the causal conv's own left padding; reversing within the length does not
    rely on that. `valid` masks must be prefixes (the platform's are; others are an error).
  * Levels are chained with a residual connection (WaveNet's gated residual blocks); the encoder
    maps each modality to F channels so every level has width F.
  * Distillation distance: mean squared error on valid frames (`distill_distance`); SimSiam on
    each modality's mean-pooled MIB-TRL output, teacher side stop-gradient, one direction only
    (the teacher learns from its own task loss, never from the student).
  * Train-time missingness, `train_protocol`: "static" = the authors' static masks (each sample's
    frames dropped at `static_rate` from the protocol's seeded hashing keyed on the sample's row in
    the train split, identical in every epoch; one model per rate); "random" = per-sample rate
    r ~ U(0, random_max_rate) drawn anew each step (`missing.random_rate`), one model for all rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from affectune import MODALITIES
from affectune.batch import Batch
from affectune.data.schema import DatasetSpec
from affectune.models._registry import register
from affectune.models.base import MERModel, ModelConfig, TrainViews
from affectune.models.layers import (
    MLP, CrossAttentionBlock, SinusoidalPositionalEncoding, TaskHead, TemporalConv, TransformerEncoder,
    masked_mean, zero_padding,
)
from affectune.search_spaces import grid_space, register_space

PROTOCOLS = ("static", "random")
"""Train-time missing protocols: the authors' static per-sample masks, or a random rate per step."""

DISTANCES = ("mse", "l1")
"""Distillation distances between student and (stop-gradient) teacher features."""

NON_TEXT = ("audio", "vision")
"""The two fusion paths pair text with each of these."""


@dataclass
class MITRDNetConfig(ModelConfig):
    """MITR-DNet hyper-parameters. `hidden` (fusion width d) and `dropout` come from ModelConfig."""

    levels: int = 4
    """MIB-TRL levels L; level i has dilation 2^(i-1) (paper: 4, Table II ablates 1..5)."""
    filters: int = 25
    """Filters F of every MIB-TRL level (paper: 25; the concatenated output has L*F channels)."""
    kernel_size: int = 2
    """Temporal kernel of the causal dilated convolutions (paper: 2)."""
    residual: bool = True
    """Add each level's input to its gated output (WaveNet residual; paper silent)."""
    encoder_kernel: int = 1
    """Kernel of the unimodal encoder Conv1D E_m (odd; 1 keeps MIB-TRL the only temporal model)."""
    layers: int = 2
    """Layers of each fusion self-attention encoder and of each cross-attention path."""
    heads: int = 4
    """Attention heads in the fusion Transformer."""
    ff_mult: int = 4
    """Feed-forward width of the fusion layers, as a multiple of hidden."""
    positional: bool = True
    """Add sinusoidal positions to each modality's tokens before fusion."""
    distill_weight: float = 0.3
    """Weight of the feature distillation from the complete view (authors' trainer: 0.3)."""
    distill_distance: str = "mse"
    """Distance of the feature distillation: "mse" or "l1"."""
    simsiam_weight: float = 1.0
    """Weight of the SimSiam loss between student and teacher representations (paper silent)."""
    recon_weight: float = 1.0
    """Weight of the SmoothL1 reconstruction of dropped frames (paper silent)."""
    recon_beta: float = 1.0
    """SmoothL1's beta (switch from quadratic to linear)."""
    teacher_task_weight: float = 1.0
    """Weight of the task loss on the complete (teacher) view; 0 trains the student's task only."""
    train_protocol: str = "random"
    """Train-time missingness: "static" (authors' per-sample masks at one rate) or "random"."""
    static_rate: float = 0.5
    """Frame drop rate of the static protocol (one model per rate; the authors' example 0.5)."""
    static_seed: int = 0
    """Seed of the static masks (the masks are a pure function of it and each sample's row)."""
    random_max_rate: float = 1.0
    """The random protocol draws r ~ U(0, random_max_rate) per sample and step."""
    train_modalities: str = "tav"
    """Modalities (letters t/a/v) whose frames the train-time protocol drops."""

    def __post_init__(self):
        for name in ("levels", "filters", "layers", "heads", "ff_mult", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2 (a causal conv that sees the past), got {self.kernel_size}")
        if self.encoder_kernel < 1 or self.encoder_kernel % 2 == 0:
            raise ValueError(f"encoder_kernel must be odd and >= 1, got {self.encoder_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("distill_weight", "simsiam_weight", "recon_weight", "teacher_task_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.recon_beta <= 0:
            raise ValueError(f"recon_beta must be > 0, got {self.recon_beta}")
        if self.distill_distance not in DISTANCES:
            raise ValueError(f"distill_distance must be one of {DISTANCES}, got {self.distill_distance!r}")
        if self.train_protocol not in PROTOCOLS:
            raise ValueError(f"train_protocol must be one of {PROTOCOLS}, got {self.train_protocol!r}")
        for name in ("static_rate", "random_max_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        from affectune.missing import parse_subset  # the protocol's one parser of t/a/v letters

        parse_subset(self.train_modalities)


# ----------------------------------------------------------------------------- MIB-TRL


def valid_lengths(valid: torch.Tensor) -> torch.Tensor:
    """(B,) lengths of prefix masks valid (B, T); a mask with a gap is an error (R needs a prefix)."""
    lengths = valid.sum(1)  # (B,)
    prefix = torch.arange(valid.shape[1], device=valid.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, valid):
        raise ValueError("MIB-TRL needs valid masks that are prefixes (frames [0, length)); got a mask with gaps")
    return lengths


def reverse_in_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """R: x (B, T, C) with frames [0, L_i) of sample i reversed and padding left in place.

    An involution (R(R(x)) = x), so it also un-reverses the backward stream's output."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    L = lengths[:, None].to(t.dtype)  # (B, 1)
    index = torch.where(t < L, L - 1 - t, t)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class CausalGatedConv(nn.Module):
    """One MIB-TRL level: (B, T, C_in) -> tanh(W_f * x) * sigmoid(W_g * x) (B, T, F), causal, dilated.

    Frame t reads frames t, t - d, ..., t - (k-1) d only: the input is left-padded with (k-1) d
    zeros, and padded frames are zeroed first so they equal that padding."""

    def __init__(self, in_dim: int, filters: int, kernel_size: int, dilation: int):
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(in_dim, 2 * filters, kernel_size, dilation=dilation)  # filter and gate

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = F.pad(zero_padding(x, valid).transpose(1, 2), (self.left, 0))  # (B, C_in, left + T)
        filt, gate = self.conv(h).chunk(2, dim=1)  # 2 x (B, F, T)
        return zero_padding((torch.tanh(filt) * torch.sigmoid(gate)).transpose(1, 2), valid)  # (B, T, F)


class MIBTRL(nn.Module):
    """Bidirectional dilated causal convolutions with blocks shared by both streams.

    x (B, T, F), valid (B, T) -> Z (B, T, L*F): level outputs f_i + b_i concatenated."""

    def __init__(self, filters: int, levels: int, kernel_size: int, residual: bool, dropout: float):
        super().__init__()
        self.residual = residual
        self.levels = nn.ModuleList(CausalGatedConv(filters, filters, kernel_size, 2 ** i) for i in range(levels))
        self.drop = nn.Dropout(dropout)

    def forward_stream(self, x: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        """The L level outputs of the causal chain on x: each (B, T, F), frame t reads frames <= t."""
        outs, h = [], zero_padding(x, valid)  # padded frames stay zero through the residuals
        for level in self.levels:
            g = self.drop(level(h, valid))  # (B, T, F)
            h = h + g if self.residual else g
            outs.append(h)
        return outs

    def streams(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(forward levels, backward levels), the backward ones un-reversed so frames align."""
        lengths = valid_lengths(valid)
        B = x.shape[0]
        both = self.forward_stream(torch.cat([x, reverse_in_length(x, lengths)]), valid.repeat(2, 1))  # one pass
        return [h[:B] for h in both], [reverse_in_length(h[B:], lengths) for h in both]

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        fwd, bwd = self.streams(x, valid)
        return torch.cat([f + b for f, b in zip(fwd, bwd)], -1)  # (B, T, L*F)


# ----------------------------------------------------------------------------- fusion


class TextCentricFusion(nn.Module):
    """Text as the hub: each non-text modality enriches the text slots by self-attention over
    [text; m], then the audio path reads the vision path and vice versa by cross-attention.

    h: modality -> (B, T_m, d), valid -> (B, T_m) -> {"va": (B, d), "av": (B, d)} pooled over text."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float, ff_mult: int):
        super().__init__()
        self.pair = nn.ModuleDict({m: TransformerEncoder(dim, heads, layers, dropout, ff_mult) for m in NON_TEXT})
        self.cross = nn.ModuleDict({k: nn.ModuleList(CrossAttentionBlock(dim, heads, dropout, ff_mult)
                                                     for _ in range(layers)) for k in ("va", "av")})

    def forward(self, h: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        T_t, v_t = h["text"].shape[1], valid["text"]
        path = {}
        for m in NON_TEXT:
            seq = self.pair[m](torch.cat([h["text"], h[m]], 1), torch.cat([v_t, valid[m]], 1))  # (B, T_t+T_m, d)
            path[m] = seq[:, :T_t]  # text slots enriched by m (B, T_t, d)
        y_va, y_av = path["audio"], path["vision"]
        for blk_va, blk_av in zip(self.cross["va"], self.cross["av"]):
            y_va, y_av = blk_va(y_va, v_t, y_av, v_t), blk_av(y_av, v_t, y_va, v_t)  # both read the other's input
        return {"va": masked_mean(y_va, v_t), "av": masked_mean(y_av, v_t)}  # 2 x (B, d)


# ----------------------------------------------------------------------------- the model


@register("mitr_dnet")
class MITRDNet(MERModel):
    """MITR-DNet: complete view teaches a masked view through MIB-TRL, fusion, SimSiam and reconstruction."""

    config_class = MITRDNetConfig

    def __init__(self, config: MITRDNetConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        width = c.levels * c.filters  # MIB-TRL output channels
        self.encoders = nn.ModuleDict({m: TemporalConv(spec.dims[m], c.filters, c.encoder_kernel) for m in MODALITIES})
        self.mibtrl = MIBTRL(c.filters, c.levels, c.kernel_size, c.residual, c.dropout)
        self.to_fusion = nn.Linear(width, d)  # shared: the subspace is modality-invariant
        self.modality_embedding = nn.Parameter(torch.randn(len(MODALITIES), d) * 0.02)  # which modality a token is
        self.pos = SinusoidalPositionalEncoding(d) if c.positional else None
        self.fusion = TextCentricFusion(d, c.heads, c.layers, c.dropout, c.ff_mult)
        self.heads = nn.ModuleDict({k: TaskHead(d, spec, d, c.dropout) for k in ("va", "av")})
        # SimSiam: projector on the pooled MIB-TRL output, bottleneck predictor (SimSiam's d/4)
        self.projector = MLP(width, d, d, c.dropout)
        self.predictor = MLP(d, max(d // 4, 1), d, c.dropout)
        self.decoders = nn.ModuleDict({m: nn.Linear(width, spec.dims[m]) for m in MODALITIES})  # reconstruction

    # -- forward --------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict:
        """{"pred": (B,) or (B, C), "z": modality -> Z_m (B, T_m, L*F), "fused": (B, 2d)}."""
        z, tokens = {}, {}
        for k, m in enumerate(MODALITIES):
            valid = batch.valid[m]  # (B, T_m)
            z[m] = self.mibtrl(self.encoders[m](batch.features(m), valid), valid)  # (B, T_m, L*F)
            h = self.to_fusion(z[m]) + self.modality_embedding[k]  # (B, T_m, d)
            tokens[m] = zero_padding(self.pos(h) if self.pos is not None else h, valid)
        paths = self.fusion(tokens, batch.valid)  # {"va", "av"}: (B, d)
        pred = self.heads["va"](paths["va"]) + self.heads["av"](paths["av"])  # sum of the two outputs
        return {"pred": pred, "z": z, "fused": torch.cat([paths["va"], paths["av"]], -1)}

    # -- training policy ------------------------------------------------------------------------
    def static_view(self, batch: Batch) -> Batch:
        """The authors' static masks: frames dropped at `static_rate`, a pure function of
        (static_seed, the sample's train row, modality), so every epoch sees the same mask."""
        from affectune import missing

        ids = [f"mitr_dnet/train-row-{int(i)}" for i in batch.index.tolist()]  # identity = row in the split
        dropped = {}
        for m in sorted(missing.parse_subset(self.config.train_modalities)):
            valid = batch.valid[m]  # (B, T_m)
            lengths = valid_lengths(valid).cpu().numpy()
            mask = missing.frame_mask(ids, lengths, valid.shape[1], m, self.config.static_rate,
                                      seed=self.config.static_seed)  # (B, T_m) numpy, prefix-stable in T
            dropped[m] = torch.from_numpy(mask).to(valid.device)
        return missing.apply_dropped(batch, dropped)

    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        from affectune import missing

        c = self.config
        mods = tuple(missing.parse_subset(c.train_modalities))
        if c.train_protocol == "static":
            rate = torch.full((batch.size,), c.static_rate)
            return TrainViews(batch, {"masked": self.static_view(batch)}, rate={"masked": rate})
        return TrainViews(batch, {"masked": missing.random_rate(batch, generator, c.random_max_rate, mods)})

    # -- losses ---------------------------------------------------------------------------------
    def distill_loss(self, student: dict, teacher: dict, valid: dict[str, torch.Tensor]) -> torch.Tensor:
        """dist(Z^s, sg Z^t) averaged over valid frames and modalities + dist(Y^s, sg Y^t)."""
        dist = F.mse_loss if self.config.distill_distance == "mse" else F.l1_loss
        per_mod = []
        for m in MODALITIES:
            w = valid[m].unsqueeze(-1).to(student["z"][m].dtype)  # (B, T, 1)
            err = dist(student["z"][m], teacher["z"][m].detach(), reduction="none") * w  # (B, T, L*F)
            per_mod.append(err.sum() / (w.sum() * err.shape[-1]).clamp_min(1.0))
        return torch.stack(per_mod).mean() + dist(student["fused"], teacher["fused"].detach())

    def simsiam_loss(self, student: dict, teacher: dict, valid: dict[str, torch.Tensor]) -> torch.Tensor:
        """1 - cos(pred(proj(z^s)), sg proj(z^t)) per modality, over samples with valid frames."""
        per_mod = []
        for m in MODALITIES:
            p = self.predictor(self.projector(masked_mean(student["z"][m], valid[m])))  # (B, d)
            with torch.no_grad():  # stop-gradient: the teacher only gives targets
                target = self.projector(masked_mean(teacher["z"][m].detach(), valid[m]))  # (B, d)
            has = valid[m].any(1).to(p.dtype)  # (B,)
            loss = (1 - F.cosine_similarity(p, target, dim=-1)) * has
            per_mod.append(loss.sum() / has.sum().clamp_min(1.0))
        return torch.stack(per_mod).mean()

    def recon_loss(self, student: dict, student_batch: Batch, complete: Batch) -> torch.Tensor:
        """SmoothL1(dec_m(Z^s_m), X_m) on the frames the student lost (valid, present in the complete view)."""
        per_mod, counted = [], 0
        for m in MODALITIES:
            lost = (student_batch.dropped[m] & complete.present(m)).unsqueeze(-1)  # (B, T, 1)
            recon = self.decoders[m](student["z"][m])  # (B, T, D_m)
            err = F.smooth_l1_loss(recon, complete.features(m), reduction="none", beta=self.config.recon_beta)
            n = lost.sum() * err.shape[-1]
            per_mod.append((err * lost).sum() / n.clamp_min(1))  # 0 (with a gradient) if nothing was lost
            counted += int(n > 0)
        return torch.stack(per_mod).sum() / max(counted, 1)

    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        """The total above; the student is views["masked"] (the complete batch when there is none)."""
        c = self.config
        complete = views.complete
        masked = views.views.get("masked", complete)
        teacher, student = self(complete), self(masked)
        parts = {
            "task": self.task_loss(student["pred"], masked.label),
            "task_teacher": self.task_loss(teacher["pred"], complete.label),
            "distill": self.distill_loss(student, teacher, masked.valid),
            "simsiam": self.simsiam_loss(student, teacher, masked.valid),
            "recon": self.recon_loss(student, masked, complete),
        }
        loss = (parts["task"] + c.teacher_task_weight * parts["task_teacher"] + c.distill_weight * parts["distill"]
                + c.simsiam_weight * parts["simsiam"] + c.recon_weight * parts["recon"])
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}


# ----------------------------------------------------------------------------- presets and spaces

MITRDNet.presets = {
    # The authors' recipe as far as it is known (methods.md): 4 levels of 25 filters, distillation
    # weight 0.3, static masks at one rate (one model per rate; override static_rate per run).
    "paper": {"model_config": {"levels": 4, "filters": 25, "kernel_size": 2, "distill_weight": 0.3,
                               "train_protocol": "static", "static_rate": 0.5}},
}
MITRDNet.study_defaults = {
    # a few minutes on 2 cores: narrow fusion (24 is divisible by 2, 4 and 6 heads), random rates
    "epochs": 6, "batch_size": 32, "lr": 2e-3, "model_config": {"hidden": 24, "train_protocol": "random"},
}

grid_space("mitr_dnet", "paper", [{"levels": i} for i in range(1, 6)],
           description="MITR-DNet Table II: MIB-TRL levels i = 1..5 (25 filters)")


@register_space("mitr_dnet", "wide", description="MIB-TRL levels and filters, distillation / SimSiam / "
                "reconstruction weights, lr")
def mitr_dnet_wide(trial) -> None:
    trial.suggest_int("levels", low=1, high=5)
    trial.suggest_categorical("filters", (16, 25, 32))
    trial.suggest_float("distill_weight", low=0.0, high=1.0)
    trial.suggest_float("simsiam_weight", low=0.0, high=2.0)
    trial.suggest_float("recon_weight", low=0.0, high=2.0)
    trial.suggest_float("lr", low=1e-4, high=1e-2, log=True)
