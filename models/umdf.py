"""UMDF: a Unified self-distillation framework for Multimodal sentiment analysis with uncertain
missing modalities (Li et al., AAAI 2024; shared/papers/001, full text; no public code).

Training: each sample of a batch is turned into two heterogeneous missing versions S_a, S_b
(intra-modality frame drops and inter-modality whole-modality drops, the complete case included;
`affectune.missing.two_views`), both through ONE network:

    X'_m (B, T_m, D_m), m in {L, A, V}
      -> Conv1D (k=3) + sinusoidal positions         Z_m (B, T_m, d)
      -> MCIM x D layers, for every target t (sec. "Multi-grained Crossmodal Interaction"):
           Z^c_t = LN(CA(Z_LAV, Z_t) + Z_t)                                  coarse, eq. 8
           Z^f_t = LN(CA(Z_tx, Z^c_t) + Z^c_t) + LN(CA(Z_ty, Z^c_t) + Z^c_t)   fine, eq. 9
           Z^h_t = LN(FFN(Z^f_t) + Z^f_t)
      -> [Z^h_L ; Z^h_A ; Z^h_V] on one time axis -> Transformer    H_k (B, T, 3d), k in {a, b}
      -> DFIM: M_k = softmax_T(FC(H_k)), H~_k = diag(M_k) H_k (frame-level self-enhancement; x T, below)
               mu = sigmoid(Conv3([H~_a ; H~_b])), H_e = mu * H~_a + (1 - mu) * H~_b      eq. 10-11
               -> Transformer -> last element -> FC layers                 y^ (B,) or (B, C)
    L = L_task(y^) + lambda1 * MMD(h_a, h_b) + lambda2 * L_logits(f_y(h_a), f_y(h_b))    eq. 3, 5, 6
    with h_k the last element of H_k; L_logits = JS for classification, MSE for regression.
Inference: the test sample is cloned into both streams (S_a = S_b = S).

Decisions where the paper is silent (docs/models.md, UMDF):
  * f_y, the logit layer of the distillation, is the prediction head itself (trained by the task
    loss). A separate f_y seen only by the distillation loss could zero itself and the loss.
  * "[Z^h_L, Z^h_A, Z^h_V] -> H in R^{T x 3d}" concatenates features frame by frame, which needs
    one time axis. Aligned data: frame index t (`joint_axis="index"`). Unaligned data
    (`"proportional"`): per sample, the common axis has n* = max_m n_m frames and frame i reads
    frame floor((i + 1/2) n_m / n*) of modality m (nearest-neighbour stretch of each valid
    sequence to the longest one; the identity when lengths agree; parameter-free).
  * MMD: Gaussian kernels summed over `mmd_kernels` bandwidths (DAN's multi-bandwidth sum around
    the batch's mean squared distance), plug-in estimator of eq. 2 over the batch's n samples.
  * Self-enhancement: diag(M) H shrinks every frame by ~1/T (softmax weights sum to 1), which
    left the next post-norm layer reading mostly its biases; `enhance="rescaled"` (default)
    multiplies by the number of valid frames T, so uniform scores give H~ = H ("plain": literal).
  * Layer counts of the two Transformers (after MCIM, in DFIM) and their FFN width are fields.
  * Train-time views: `intact_prob` and `max_frame_rate` (see UMDFConfig).
"""

from __future__ import annotations

import re
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
    FeedForward, MultiHeadAttention, SinusoidalPositionalEncoding, TaskHead, TemporalConv,
    TransformerEncoder, last_valid, zero_padding,
)
from affectune.models.losses import gaussian_mmd, js_divergence
from affectune.search_spaces import register_space

JOINT_AXES = ("auto", "index", "proportional")


@dataclass
class UMDFConfig(ModelConfig):
    """UMDF hyper-parameters (defaults: the paper's MOSI setting). `dropout` comes from ModelConfig."""

    hidden: int = 40
    """Feature size d of every modality after the Conv1D (paper: 40); the joint width is 3d."""
    layers: int = 4
    """D, the number of stacked MCIM layers (paper: 4)."""
    heads: int = 10
    """Attention heads everywhere (paper: 10 MOSI / 8 MOSEI / 10 IEMOCAP); divides hidden."""
    conv_kernel: int = 3
    """Temporal kernel of the input Conv1D (paper: 3)."""
    ff_mult: int = 4
    """Feed-forward width of MCIM's FFN and of both Transformers, as a multiple of their width."""
    fusion_layers: int = 1
    """Layers of the Transformer encoder after the MCIM concatenation (paper: unstated)."""
    dfim_layers: int = 1
    """Layers of the Transformer encoder after DFIM's gate (paper: unstated)."""
    gate_kernel: int = 3
    """Temporal kernel of DFIM's gate convolution W_3x3 (eq. 10; paper: 3)."""
    shared_frame_scorer: bool = False
    """One frame-score FC for both streams; False = F_a and F_b as the paper's notation F_k."""
    enhance: str = "rescaled"
    """DFIM self-enhancement: "rescaled" H~ = n diag(M) H (n valid frames; mean weight 1) or "plain" diag(M) H."""
    joint_axis: str = "auto"
    """Time axis of the 3d concatenation: "index", "proportional", or "auto" (index iff aligned data)."""
    lambda1: float = 1.0
    """Weight of the feature distillation MMD(h_a, h_b) (paper: searched, value unstated)."""
    lambda2: float = 1.0
    """Weight of the logits distillation, JS or MSE (paper: searched, value unstated)."""
    mmd_kernels: int = 5
    """Number of Gaussian bandwidths summed in the MMD kernel."""
    mmd_kernel_mul: float = 2.0
    """Ratio between consecutive MMD bandwidths."""
    regression_loss: str = "mse"
    """Task loss for regression: "mse" (paper) or "l1" (MMSA's convention)."""
    max_frame_rate: float = 1.0
    """Train views: intra-modality drop rate r ~ U(0, max_frame_rate) per available modality."""
    intact_prob: float = 0.5
    """Train views: probability that a sample's available modalities keep all frames in a view."""

    def __post_init__(self):
        for name in ("hidden", "layers", "heads", "conv_kernel", "ff_mult", "fusion_layers", "dfim_layers",
                     "gate_kernel", "mmd_kernels"):
            if getattr(self, name) < 1:
                raise ValueError(f"UMDFConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"UMDFConfig.hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        for name in ("conv_kernel", "gate_kernel"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"UMDFConfig.{name} must be odd (keeps T frames), got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UMDFConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.lambda1 < 0 or self.lambda2 < 0:
            raise ValueError(f"UMDFConfig.lambda1 and lambda2 must be >= 0, got {self.lambda1}, {self.lambda2}")
        if self.mmd_kernel_mul <= 0:
            raise ValueError(f"UMDFConfig.mmd_kernel_mul must be > 0, got {self.mmd_kernel_mul}")
        if self.enhance not in ("rescaled", "plain"):
            raise ValueError(f"UMDFConfig.enhance must be 'rescaled' or 'plain', got {self.enhance!r}")
        if self.joint_axis not in JOINT_AXES:
            raise ValueError(f"UMDFConfig.joint_axis must be one of {JOINT_AXES}, got {self.joint_axis!r}")
        if self.regression_loss not in ("mse", "l1"):
            raise ValueError(f"UMDFConfig.regression_loss must be 'mse' or 'l1', got {self.regression_loss!r}")
        for name in ("max_frame_rate", "intact_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"UMDFConfig.{name} must be in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------- MCIM


class ResidualCrossAttention(nn.Module):
    """X_t <- LN(X_t + CA(X_s, X_t)) of eq. 7: target (B, T_t, d) reads source (B, T_s, d)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, target, source, source_valid):
        return self.norm(target + self.drop(self.attn(target, source, source, source_valid)))


class MCIMLayer(nn.Module):
    """One MCIM layer: coarse (all three modalities), fine (the two pairs with the target), FFN."""

    def __init__(self, dim: int, heads: int, dropout: float, ff_mult: int):
        super().__init__()
        self.coarse = nn.ModuleDict({t: ResidualCrossAttention(dim, heads, dropout) for t in MODALITIES})
        self.fine = nn.ModuleDict({t: nn.ModuleDict({s: ResidualCrossAttention(dim, heads, dropout)
                                                     for s in MODALITIES if s != t}) for t in MODALITIES})
        self.ff = nn.ModuleDict({t: FeedForward(dim, ff_mult, dropout) for t in MODALITIES})
        self.ff_norm = nn.ModuleDict({t: nn.LayerNorm(dim) for t in MODALITIES})
        self.drop = nn.Dropout(dropout)

    def forward(self, Z: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        def cat(mods):  # sources are concatenated on the time axis, with their padding masks
            return torch.cat([Z[m] for m in mods], 1), torch.cat([valid[m] for m in mods], 1)

        z_all, v_all = cat(MODALITIES)  # Z_LAV (B, T_L + T_A + T_V, d)
        out = {}
        for t in MODALITIES:
            z_c = self.coarse[t](Z[t], z_all, v_all)  # eq. 8, (B, T_t, d)
            z_f = sum(self.fine[t][s](z_c, *cat((t, s))) for s in MODALITIES if s != t)  # eq. 9
            z_h = self.ff_norm[t](z_f + self.drop(self.ff[t](z_f)))  # (B, T_t, d)
            out[t] = zero_padding(z_h, valid[t])
        return out


def joint_sequence(Z: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], axis: str):
    """[Z_L ; Z_A ; Z_V] frame by frame: 3 x (B, T_m, d) -> (B, T, 3d) and its valid mask (B, T).

    "index": frame t of every modality (equal padded lengths required). "proportional": per sample,
    n* = max_m n_m frames; frame i reads frame floor((2i + 1) n_m / (2 n*)) of modality m (valid
    masks are prefixes of length n_m); a modality with no frame contributes zeros."""
    if axis == "index":
        lengths = {m: Z[m].shape[1] for m in MODALITIES}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"joint_axis='index' needs equal sequence lengths, got {lengths}; "
                             "use joint_axis='proportional' for unaligned data")
        joint_valid = valid["text"] | valid["audio"] | valid["vision"]  # (B, T)
        return torch.cat([Z[m] for m in MODALITIES], -1), joint_valid
    n = {m: valid[m].sum(1) for m in MODALITIES}  # (B,) frames per modality
    n_star = torch.stack(list(n.values())).amax(0)  # (B,)
    T = max(int(n_star.max()), 1)
    i = torch.arange(T, device=n_star.device)  # (T,)
    joint_valid = i[None, :] < n_star[:, None]  # (B, T)
    parts = []
    for m in MODALITIES:
        src = ((2 * i[None, :] + 1) * n[m][:, None]) // (2 * n_star.clamp_min(1)[:, None])  # (B, T)
        src = src.clamp(max=Z[m].shape[1] - 1)
        gathered = Z[m].gather(1, src.unsqueeze(-1).expand(-1, -1, Z[m].shape[-1]))  # (B, T, d)
        parts.append(gathered * (joint_valid & (n[m] > 0)[:, None]).unsqueeze(-1).to(gathered.dtype))
    return torch.cat(parts, -1), joint_valid


# ----------------------------------------------------------------------------- DFIM


class DFIM(nn.Module):
    """Dynamic feature integration: H_a, H_b (B, T, 3d) -> refined last element (B, 3d)."""

    def __init__(self, width: int, heads: int, dropout: float, layers: int, ff_mult: int, gate_kernel: int,
                 shared_scorer: bool, enhance: str):
        super().__init__()
        self.rescale = enhance == "rescaled"
        scorer = nn.Linear(width, 1)
        self.score = nn.ModuleDict({"a": scorer, "b": scorer if shared_scorer else nn.Linear(width, 1)})
        self.gate = TemporalConv(2 * width, width, gate_kernel, bias=True)  # W_3x3 of eq. 10
        self.encoder = TransformerEncoder(width, heads, layers, dropout, ff_mult)

    def enhance(self, H: torch.Tensor, valid: torch.Tensor, stream: str) -> torch.Tensor:
        """Frame-level self-enhancement H~ = diag(M) H, M = softmax over valid frames of FC(H).

        "rescaled" multiplies by the number of valid frames n: uniform scores give H~ = H. Without
        it every frame shrinks by ~1/n and the next post-norm layer mostly sees its own biases."""
        scores = self.score[stream](H).squeeze(-1).masked_fill(~valid, float("-inf"))  # (B, T)
        M = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # a sample without frames gets zeros
        if self.rescale:
            M = M * valid.sum(1, keepdim=True).to(M.dtype)  # (B, T), mean weight 1 over valid frames
        return H * M.unsqueeze(-1)  # (B, T, 3d)

    def forward(self, H_a, H_b, valid) -> torch.Tensor:
        Ht_a, Ht_b = self.enhance(H_a, valid, "a"), self.enhance(H_b, valid, "b")
        mu = torch.sigmoid(self.gate(torch.cat([Ht_a, Ht_b], -1), valid))  # (B, T, 3d), eq. 10
        H_e = mu * Ht_a + (1 - mu) * Ht_b  # eq. 11
        return last_valid(self.encoder(H_e, valid), valid)  # (B, 3d)


# ----------------------------------------------------------------------------- the model


@register("umdf")
class UMDF(MERModel):
    """One network, two streams; trained on two heterogeneous missing views, tested on clones."""

    config_class = UMDFConfig

    def __init__(self, config: UMDFConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        width = 3 * d
        if width % c.heads:  # hidden % heads == 0 already implies it; kept for clarity of the error
            raise ValueError(f"3 * hidden ({width}) must be divisible by heads ({c.heads})")
        self.joint_axis = c.joint_axis if c.joint_axis != "auto" else ("index" if spec.aligned else "proportional")
        self.proj = nn.ModuleDict({m: TemporalConv(spec.dims[m], d, c.conv_kernel) for m in MODALITIES})
        self.pos = SinusoidalPositionalEncoding(d)
        self.mcim = nn.ModuleList(MCIMLayer(d, c.heads, c.dropout, c.ff_mult) for _ in range(c.layers))
        self.fusion = TransformerEncoder(width, c.heads, c.fusion_layers, c.dropout, c.ff_mult)
        self.dfim = DFIM(width, c.heads, c.dropout, c.dfim_layers, c.ff_mult, c.gate_kernel, c.shared_frame_scorer,
                         c.enhance)
        self.head = TaskHead(width, spec, width, c.dropout)  # the prediction FC layers, also f_y

    # -- one stream: MCIM + Transformer -> H_k ------------------------------------------------------
    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch -> H (B, T, 3d) and its valid mask (B, T)."""
        valid = batch.valid
        Z = {m: zero_padding(self.pos(self.proj[m](batch.features(m), valid[m])), valid[m])
             for m in MODALITIES}  # Z_m (B, T_m, d)
        for layer in self.mcim:
            Z = layer(Z, valid)
        H, joint_valid = joint_sequence(Z, valid, self.joint_axis)  # (B, T, 3d)
        return self.fusion(H, joint_valid), joint_valid

    def two_stream(self, batch_a: Batch, batch_b: Batch) -> dict[str, torch.Tensor]:
        """Both streams and DFIM: pred (B,) | (B, C), h_a / h_b (B, 3d), logits_a / logits_b = f_y(h_k)."""
        H_a, valid = self.encode(batch_a)
        if batch_b is batch_a and not self.training:
            H_b = H_a  # a clone through the same deterministic network gives the same H: compute once
        else:
            H_b, valid_b = self.encode(batch_b)
            if not torch.equal(valid_b, valid):
                raise ValueError("the two UMDF streams must hold the same samples (padding masks differ)")
        h_a, h_b = last_valid(H_a, valid), last_valid(H_b, valid)  # (B, 3d)
        pred = self.head(self.dfim(H_a, H_b, valid))
        return {"pred": pred, "h_a": h_a, "h_b": h_b, "logits_a": self.head(h_a), "logits_b": self.head(h_b)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Inference: the sample is cloned into both streams."""
        return self.two_stream(batch, batch)

    # -- training -------------------------------------------------------------------------------
    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        from affectune import missing  # lazy: models import without the protocol module loaded

        a, b = missing.two_views(batch, generator, self.config.max_frame_rate, self.config.intact_prob)
        return TrainViews(batch, {"a": a, "b": b})

    def task_loss(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for classification; MSE (paper) or L1 for regression."""
        if self.is_regression and self.config.regression_loss == "mse":
            return F.mse_loss(pred.reshape(-1), label.float())
        return super().task_loss(pred, label)

    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        """L = task + lambda1 * MMD(h_a, h_b) + lambda2 * (JS | MSE)(f_y(h_a), f_y(h_b)).

        Views without "a" and "b" (e.g. a complete-only TrainViews) feed the complete batch to both."""
        a, b = views.views.get("a", views.complete), views.views.get("b", views.complete)
        out = self.two_stream(a, b)
        task = self.task_loss(out["pred"], views.complete.label)
        fea = gaussian_mmd(out["h_a"], out["h_b"], num_kernels=self.config.mmd_kernels,
                           kernel_mul=self.config.mmd_kernel_mul)
        if self.is_regression:
            logits = F.mse_loss(out["logits_a"], out["logits_b"])
        else:
            logits = js_divergence(out["logits_a"], out["logits_b"])
        total = task + self.config.lambda1 * fea + self.config.lambda2 * logits
        return {"loss": total, "task": task.detach(), "mmd": fea.detach(), "logits": logits.detach()}

    # -- presets --------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, dataset: str | None = None) -> dict:
        """"paper" picks the MOSI / MOSEI / IEMOCAP setting named in the dataset source string."""
        if name != "paper" or dataset is None:
            return super().preset(name, dataset)
        found = sorted(set(re.findall(r"mosei|mosi|iemocap", dataset.lower())))
        if len(found) != 1:
            raise ValueError(f"umdf 'paper' preset: cannot tell MOSI, MOSEI or IEMOCAP from dataset {dataset!r} "
                             f"(found {found or 'none'}); use one of {sorted(k for k in cls.presets if k != 'paper')}")
        return cls.presets[f"paper-{found[0]}"]


# ----------------------------------------------------------------------------- presets and spaces


def _paper(batch_size: int, lr: float, epochs: int, heads: int) -> dict:
    """Sec. "Experimental Setup": Adam, d = 40, D = 4 MCIM layers on all three datasets."""
    return {"optimizer": "adam", "lr": lr, "batch_size": batch_size, "epochs": epochs,
            "model_config": {"hidden": 40, "layers": 4, "heads": heads}}


UMDF.presets = {
    "paper-mosi": _paper(128, 1e-3, 100, 10),
    "paper-mosei": _paper(16, 1e-3, 30, 8),
    "paper-iemocap": _paper(32, 2e-3, 40, 10),
    "paper": _paper(128, 1e-3, 100, 10),  # without a dataset: MOSI's; preset("paper", dataset) picks
}
UMDF.study_defaults = {
    # minutes on 2 shared cores: one MCIM layer at width 20 (divisible by every head count searched)
    "epochs": 4, "batch_size": 32, "lr": 1e-3, "model_config": {"hidden": 20, "layers": 1, "heads": 4},
}


@register_space("umdf", "distill", description="lambda1 (MMD), lambda2 (logits), MCIM layers D, heads, lr")
def umdf_distill(trial) -> None:
    trial.suggest_float("lambda1", low=1e-2, high=10.0, log=True)
    trial.suggest_float("lambda2", low=1e-2, high=10.0, log=True)
    trial.suggest_int("layers", low=1, high=4)
    trial.suggest_categorical("heads", (2, 4, 5, 10))  # divisors of the study width 20 (paper d = 40 too)
    trial.suggest_float("lr", low=1e-4, high=3e-3, log=True)
