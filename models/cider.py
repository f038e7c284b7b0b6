"""CIDer: robust multimodal emotion recognition under missing modalities and distribution shifts.

Paper: Zhong et al., "Towards Robust Multimodal Emotion Recognition under Missing Modalities and
Distribution Shifts" (arXiv 2506.10452; shared/papers/000). Facts from the authors' code and our
decisions where they differ are in shared/methods.md ("CIDer") and docs/models.md. Pipeline:

    X_m (B, T_m, D_m)      complete inputs, or the RMFM view (train: each frame dropped w.p. p ~ U(0,1))
      -> Conv1d(k=1)       (B, T_m, d); text frames whose token is [UNK]/[MASK] -> learned [UNK] vector
      -> WSAM (unaligned)  audio, vision compressed to the text length: single-head attention,
                           query = text, keys/values = audio or vision        (B, T_t, d)
      -> GRU per modality  (B, T_t, d)
      -> MCT, per layer:   one Q/K/V over [L; A; V] (B, 3T_t, d); seven masked attentions
                           (tav, ta, tv, av, t, a, v), each with its own output projection;
                           per modality a summary Linear(4d -> d) of the four that contain it
      -> additive attention pooling per modality, concat    g (B, 3d)
      -> residual projections  joint = g + W2 relu(W1 g)     (B, 3d)
      -> MACI (switch): confounders c_z = class means of the TRAIN inputs (fit-start hook,
                        buffers) -> per-modality MLPs; one classifier per class z on
                        [joint, MLP(c_z)] (B, 6d); p = sum_z softmax(f_z) P(z)  -> log p
         else a linear head on joint.
    MSSD (training): task loss on the complete view; on the RMFM view task loss
        + joint_weight (1 - cos(joint_m, joint.detach())) + attn_weight KL(attn || attn_m) of the
        last MCT layer + recon_weight SmoothL1 reconstruction on dropped positions only.
    Counterfactual text (switch): keep the frequent class-skewed tokens (CV across classes on
        train), replace every other word by [MASK]; score = log p - tau log p_cf (regression
        y - tau y_cf), tau chosen on VALIDATION by `calibrate`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from affectune import MODALITIES
from affectune.batch import Batch
from affectune.data.schema import MASK_ID, PAD_ID, UNK_ID, DatasetSpec
from affectune.models._registry import register
from affectune.models.base import EvalContext, EpochContext, FitContext, MERModel, ModelConfig, TrainViews
from affectune.models.layers import MultiHeadAttention, masked_mean, sinusoidal_table, zero_padding
from affectune.search_spaces import register_space

COMBINATIONS: tuple[str, ...] = ("tav", "ta", "tv", "av", "t", "a", "v")
"""The seven masked attentions of an MCT layer, in the authors' order."""

SPECIAL_IDS: tuple[int, ...] = (PAD_ID, UNK_ID, MASK_ID)
"""Token ids never counted, never kept and never masked by the counterfactual."""

CF_ORDERS = ("frequent_then_cv", "cv_then_frequent")
EVAL_PRIORS = ("train", "uniform")


@dataclass
class CIDerConfig(ModelConfig):
    """CIDer hyper-parameters (defaults: the authors' code). `hidden` is d, `dropout` is the
    attention / ReLU / residual dropout of the MCT."""

    hidden: int = 32
    """Model width d (authors: 32)."""
    layers: int = 3
    """MCT layers (authors' default 3; their search: 1-4)."""
    heads: int = 8
    """Heads of the MCT attention (authors' default 8; their search: 1, 2, 4, 8)."""
    out_dropout: float = 0.3
    """Dropout inside the residual projections of the joint representation."""
    embed_dropout: float = 0.2
    """Dropout on the MCT input after adding positions."""
    ff_mult: int = 4
    """Feed-forward width of an MCT layer, as a multiple of d."""
    use_wsam: bool = True
    """Unaligned data only: compress audio/vision to the text length by WSAM (False: linear
    resampling of the projected frames instead, an ablation)."""
    joint_weight: float = 0.5
    """MSSD weight of 1 - cos(joint_masked, joint_complete)."""
    attn_weight: float = 0.1
    """MSSD weight of the KL between the last MCT layer's complete and masked attention."""
    recon_weight: float = 0.6
    """MSSD weight of the SmoothL1 reconstruction of the dropped positions."""
    two_step: bool = False
    """True: the authors' two optimiser steps per batch (complete view, then masked view);
    False: both views' losses summed in one step (the platform's decision)."""
    use_maci: bool = True
    """Backdoor adjustment with class-mean confounders and per-class classifiers (else a linear head)."""
    eval_prior: str = "train"
    """P(z) at prediction time: "train" (the training prior) or "uniform" (the authors' evaluation)."""
    use_counterfactual: bool | str = "auto"
    """Counterfactual text debiasing at prediction time: True (needs token ids; refused without),
    False, or "auto" (on when the dataset has token ids, else off with a warning naming it)."""
    cv_threshold: float = 0.1
    """Keep a token in the counterfactual text only if its CV of class counts is >= this."""
    top_k: int = 100
    """Only the top_k most frequent training tokens can be kept."""
    cf_order: str = "frequent_then_cv"
    """"frequent_then_cv": CV filter among the top_k most frequent (paper); "cv_then_frequent":
    the top_k most frequent of the tokens passing the CV filter (authors' code)."""
    tau_min: float = 0.0
    """Smallest tau the calibration tries."""
    tau_max: float = 3.0
    """Largest tau the calibration tries (authors: 0..3)."""
    tau_step: float = 0.1
    """Spacing of the tau grid."""

    def __post_init__(self):
        if self.use_counterfactual not in (True, False, "auto"):
            raise ValueError(f"use_counterfactual must be true, false or 'auto', got {self.use_counterfactual!r}")
        if self.hidden < 1 or self.heads < 1 or self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be positive and divisible by heads ({self.heads})")
        for name in ("layers", "ff_mult", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "out_dropout", "embed_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("joint_weight", "attn_weight", "recon_weight", "cv_threshold", "tau_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tau_max < self.tau_min:
            raise ValueError(f"tau_max ({self.tau_max}) must be >= tau_min ({self.tau_min})")
        if self.tau_step <= 0:
            raise ValueError(f"tau_step must be > 0, got {self.tau_step}")
        if self.cf_order not in CF_ORDERS:
            raise ValueError(f"cf_order must be one of {CF_ORDERS}, got {self.cf_order!r}")
        if self.eval_prior not in EVAL_PRIORS:
            raise ValueError(f"eval_prior must be one of {EVAL_PRIORS}, got {self.eval_prior!r}")

    def tau_grid(self) -> torch.Tensor:
        """The taus `calibrate` tries: tau_min, tau_min + step, ..., tau_max (inclusive)."""
        n = int(math.floor((self.tau_max - self.tau_min) / self.tau_step + 1e-9)) + 1
        return self.tau_min + self.tau_step * torch.arange(n, dtype=torch.float64)


# ----------------------------------------------------------------------------- statistics (pure functions)


def confounder_classes(label: torch.Tensor, task: str) -> torch.Tensor:
    """(N,) long class z of each sample: the label (classification) or its sign bin, 0 = negative,
    1 = non-negative (regression)."""
    if task == "regression":
        return (label >= 0).long()
    return label.long()


def class_means(pooled: torch.Tensor, z: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) mean of pooled (N, D) per class z (zeros for an empty class) and the (C,) prior."""
    counts = torch.bincount(z, minlength=n_classes).to(pooled.dtype)  # (C,)
    sums = torch.zeros(n_classes, pooled.shape[1], dtype=pooled.dtype, device=pooled.device)
    sums.index_add_(0, z, pooled)
    return sums / counts.clamp_min(1).unsqueeze(1), counts / counts.sum()


def token_class_counts(tokens: torch.Tensor, valid: torch.Tensor, z: torch.Tensor, n_classes: int,
                       vocab_size: int) -> torch.Tensor:
    """(C, V) occurrences of every token id in the valid text positions of each class; special ids
    (PAD, UNK, MASK) are not counted."""
    counted = valid & ~torch.isin(tokens, torch.tensor(SPECIAL_IDS, device=tokens.device))  # (N, T)
    cls = z.unsqueeze(1).expand_as(tokens)[counted]  # (n,)
    flat = cls * vocab_size + tokens[counted]  # (n,) index into (C, V)
    return torch.bincount(flat, minlength=n_classes * vocab_size).view(n_classes, vocab_size).float()


def coefficient_of_variation(counts: torch.Tensor) -> torch.Tensor:
    """(V,) std / mean of the (C, V) class counts over classes (population std); 0 for unseen tokens."""
    mean = counts.mean(0)
    std = counts.std(0, correction=0)
    return torch.where(mean > 0, std / mean.clamp_min(1e-12), torch.zeros_like(mean))


def select_kept_tokens(counts: torch.Tensor, cv: torch.Tensor, threshold: float, top_k: int,
                       order: str) -> torch.Tensor:
    """(V,) bool: tokens the counterfactual text keeps. Ties in frequency break by lower id."""
    total = counts.sum(0)  # (V,)
    seen = total > 0
    passes = seen & (cv >= threshold)
    pool = seen if order == "frequent_then_cv" else passes
    # rank by frequency (stable: lower id first among equals), only within the pool
    ids = torch.arange(total.numel(), device=total.device)
    key = torch.where(pool, total, torch.full_like(total, -1.0))
    order_ids = ids[torch.argsort(-key, stable=True)]
    top = torch.zeros_like(seen)
    top[order_ids[:top_k]] = True
    return top & pool & passes


# ----------------------------------------------------------------------------- building blocks


class WSAM(nn.Module):
    """Word-level self-aligned attention: text (B, T_t, d) queries, audio or vision (B, T_m, d)
    keys/values -> the modality compressed to the text length (B, T_t, d). Single head."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadAttention(dim, 1, dropout)

    def forward(self, text: torch.Tensor, text_valid: torch.Tensor, x: torch.Tensor,
                x_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.attn(text, x, x, x_valid)  # (B, T_t, d), zeros for a sample without frames
        valid = text_valid & x_valid.any(1, keepdim=True)  # (B, T_t)
        return zero_padding(out, valid), valid


class MultimodalCompositeAttention(nn.Module):
    """One Q/K/V over [L; A; V] and seven masked attentions, summarised per modality.

    x (B, 3T, d) (segments text, audio, vision of T frames each), valid (B, 3T) -> (B, 3T, d) and
    the tav attention probabilities (B, h, 3T, 3T) (what MSSD distils).

    The seven attentions share one score matrix and differ only in which segments' keys a query may
    read, so each is assembled from the nine (query segment, key segment) blocks: a softmax within
    each block plus its log-normaliser, re-weighted per combination by exp(lse_j - logsumexp_S lse).
    This equals seven separately masked softmaxes exactly and costs one pass over the scores."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.ModuleDict({c: nn.Linear(dim, dim) for c in COMBINATIONS})
        self.summary = nn.ModuleDict({m: nn.Linear(4 * dim, dim) for m in "tav"})
        self.final = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, need_attn: bool = True):
        B, N, d = x.shape
        h, T, dh = self.heads, N // 3, d // self.heads
        q, k, v = self.qkv(x).view(B, N, 3, h, dh).permute(2, 0, 3, 1, 4)  # (B, h, 3T, dh)
        q = q / math.sqrt(dh)
        k, v = k.reshape(B, h, 3, T, dh), v.reshape(B, h, 3, T, dh)  # key/value blocks j
        scores = q.unsqueeze(2) @ k.transpose(-1, -2)  # (B, h, 3 key blocks, 3T queries, T keys)
        # padded keys: the dtype's lowest value, not -inf, so an all-padded block stays finite (its
        # uniform softmax then gets block weight 0 below) and no NaN reaches the gradients
        scores.masked_fill_(~valid.view(B, 1, 3, 1, T), torch.finfo(scores.dtype).min)
        lse = torch.logsumexp(scores, -1).transpose(2, 3)  # (B, h, 3T, 3 key blocks) log-normalisers
        probs = scores.softmax(-1)  # within-block softmax, (B, h, 3, 3T, T)
        ctx = F.dropout(probs, self.dropout, self.training) @ v  # (B, h, 3 key blocks, 3T, dh)
        has_key = valid.view(B, 1, 1, 3, T).any(-1)  # (B, 1, 1, 3) blocks with at least one valid key
        query_segment = torch.arange(3, device=x.device).repeat_interleave(T)  # (3T,)
        outs, attn_tav = {}, None
        for combo in COMBINATIONS:
            seg = ["tav".index(c) for c in combo]
            w = block_weights(lse[..., seg], has_key[..., seg])  # (B, h, 3T, |S|)
            w = w * torch.isin(query_segment, torch.tensor(seg, device=x.device)).view(1, 1, N, 1)  # rows outside S
            if combo == "tav" and need_attn:  # the full softmax over every key, (B, h, 3T, 3T)
                attn_tav = (w.transpose(2, 3).unsqueeze(-1) * probs).permute(0, 1, 3, 2, 4).reshape(B, h, N, N)
            y = (w.transpose(2, 3).unsqueeze(-1) * ctx[:, :, seg]).sum(2)  # (B, h, 3T, dh)
            outs[combo] = self.out[combo](y.transpose(1, 2).reshape(B, N, d))  # (B, 3T, d)
        summaries = [self.summary[m](torch.cat([outs[c] for c in COMBINATIONS if m in c], -1))[:, i * T:(i + 1) * T]
                     for i, m in enumerate("tav")]  # own modality's summary of its 4 combinations, (B, T, d)
        return self.final(torch.cat(summaries, 1)), attn_tav


def block_weights(lse: torch.Tensor, has_key: torch.Tensor) -> torch.Tensor:
    """Share of each key block in a softmax over their union, exp(lse_j - logsumexp_j lse); blocks
    without a valid key get 0 (a query with none at all reads nothing)."""
    w = (lse - torch.logsumexp(lse.masked_fill(~has_key, torch.finfo(lse.dtype).min), -1, keepdim=True)).exp()
    return w * has_key


class MCTLayer(nn.Module):
    """Pre-LN block: x + MCA(LN x), then x + FFN(LN x) (the authors' normalize_before)."""

    def __init__(self, dim: int, heads: int, dropout: float, ff_mult: int):
        super().__init__()
        self.attn = MultimodalCompositeAttention(dim, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.ReLU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))
        self.norm_attn, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, valid, need_attn: bool = True):
        a, attn = self.attn(self.norm_attn(x), valid, need_attn)
        x = x + self.drop(a)
        x = x + self.drop(self.ff(self.norm_ff(x)))
        return zero_padding(x, valid), attn  # (B, N, d), (B, h, N, N)


class AdditivePooling(nn.Module):
    """Additive attention pooling over valid frames: (B, T, d) -> (B, d); zeros without frames."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        s = self.score(x).squeeze(-1).masked_fill(~valid, float("-inf"))  # (B, T)
        has = valid.any(1, keepdim=True)
        w = torch.where(has, s, torch.zeros_like(s)).softmax(1) * has  # (B, T)
        return (w.unsqueeze(-1) * x).sum(1)  # (B, d)


def confounder_mlp(in_dim: int, dim: int) -> nn.Sequential:
    """The authors' per-modality confounder encoder: Linear-ReLU-Linear-ReLU-Linear."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


# ----------------------------------------------------------------------------- losses (pure functions)


def masked_recon_loss(pred: torch.Tensor, target: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """SmoothL1 over the dropped positions only: per-position mean over features, averaged over the
    dropped positions (B, T); 0 when nothing was dropped."""
    per_pos = F.smooth_l1_loss(pred, target, reduction="none").mean(-1)  # (B, T)
    w = dropped.to(per_pos.dtype)
    return (per_pos * w).sum() / w.sum().clamp_min(1.0)


def attention_kl(teacher: torch.Tensor, student: torch.Tensor, query_valid: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of (B, h, N, N) attention rows, summed over valid queries and keys,
    averaged over samples and heads (the authors' "batchmean" over B*h)."""
    eps = 1e-8
    kl = teacher * (torch.log(teacher.clamp_min(eps)) - torch.log(student.clamp_min(eps)))  # 0 where teacher is 0
    per_row = kl.sum(-1) * query_valid[:, None, :].to(kl.dtype)  # (B, h, N)
    return per_row.sum() / (teacher.shape[0] * teacher.shape[1])


# ----------------------------------------------------------------------------- the model


@register("cider")
class CIDer(MERModel):
    """CIDer (WSAM + MCT) with MSSD self-distillation, MACI and counterfactual text debiasing."""

    config_class = CIDerConfig

    def __init__(self, config: CIDerConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        self.n_confounders = 2 if spec.task == "regression" else spec.num_classes  # sign bins or classes
        self.text_len = spec.seq_lens["text"]
        self.compress = not spec.aligned  # WSAM only for unaligned data
        self.proj = nn.ModuleDict({m: nn.Conv1d(spec.dims[m], d, 1, bias=False) for m in MODALITIES})
        if spec.vocab_size:
            self.unk = nn.Parameter(torch.randn(d) * 0.02)  # [UNK]/[MASK] word in the projected space
        if self.compress and c.use_wsam:
            self.wsam = nn.ModuleDict({m: WSAM(d, c.dropout) for m in ("audio", "vision")})
        self.gru = nn.ModuleDict({m: nn.GRU(d, d, batch_first=True) for m in MODALITIES})
        self.layers = nn.ModuleList(MCTLayer(d, c.heads, c.dropout, c.ff_mult) for _ in range(c.layers))
        self.final_norm = nn.LayerNorm(d)
        self.pool = nn.ModuleDict({m: AdditivePooling(d) for m in MODALITIES})
        self.proj1, self.proj2 = nn.Linear(3 * d, 3 * d), nn.Linear(3 * d, 3 * d)
        # reconstruction decoders (masked view only): text per frame; audio/vision resample the
        # word-level axis back to their own length, then map d -> D_m (the authors' decoders)
        self.recon = nn.ModuleDict({"text": nn.Linear(d, spec.dims["text"])})
        self.recon_time = nn.ModuleDict()
        for m in ("audio", "vision"):
            self.recon_time[m] = nn.Linear(self.text_len, spec.seq_lens[m])
            self.recon[m] = nn.Linear(d, spec.dims[m])
        out_dim = spec.out_dim
        if c.use_maci:
            self.confounder_enc = nn.ModuleDict({m: confounder_mlp(spec.dims[m], d) for m in MODALITIES})
            self.classifiers = nn.ModuleList(nn.Linear(6 * d, out_dim) for _ in range(self.n_confounders))
        else:
            self.head = nn.Linear(3 * d, out_dim)
        # state computed by the hooks (buffers, so a checkpoint reproduces predictions)
        total_dim = sum(spec.dims[m] for m in MODALITIES)
        self.register_buffer("confounders", torch.zeros(self.n_confounders, total_dim))  # (C, Dt+Da+Dv)
        self.register_buffer("prior", torch.full((self.n_confounders,), 1.0 / self.n_confounders))  # (C,)
        self.register_buffer("token_counts", torch.zeros(self.n_confounders, spec.vocab_size))  # (C, V)
        self.register_buffer("token_cv", torch.zeros(spec.vocab_size))  # (V,)
        self.register_buffer("cf_keep", torch.zeros(spec.vocab_size, dtype=torch.bool))  # (V,)
        self.register_buffer("tau", torch.zeros(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("cf_active", torch.zeros((), dtype=torch.bool))  # decided at fit start

    @property
    def steps_per_batch(self) -> int:  # type: ignore[override]
        return 2 if self.config.two_step else 1

    # -- hooks ------------------------------------------------------------------------------------
    @torch.no_grad()
    def on_fit_start(self, ctx: FitContext) -> None:
        """Confounders (class means of the train inputs, utterance-pooled), P(z) and token statistics."""
        c, train = self.config, ctx.train
        has_tokens = train.tokens is not None and bool(self.spec.vocab_size)
        if c.use_counterfactual is True and not has_tokens:
            raise ValueError(
                f"cider: use_counterfactual=True needs text token ids, but dataset {ctx.dataset_name!r} has "
                "none (an MMSA pickle without text_bert, or MERBench features); set use_counterfactual=false")
        if c.use_counterfactual == "auto" and not has_tokens:
            warnings.warn(f"cider: dataset {ctx.dataset_name!r} has no text token ids, so the counterfactual "
                          "text is off (use_counterfactual='auto'); MACI still applies", stacklevel=2)
        self.cf_active.fill_(bool(c.use_counterfactual) and has_tokens)
        z = confounder_classes(train.label, self.spec.task)  # (N,)
        pooled = torch.cat([pooled_inputs(train.features[m], train.valid[m]) for m in MODALITIES], 1)  # (N, D)
        means, prior = class_means(pooled.double(), z, self.n_confounders)
        self.confounders.copy_(means.float())
        self.prior.copy_(prior.float())
        if train.tokens is not None and self.spec.vocab_size:
            counts = token_class_counts(train.tokens, train.valid["text"], z, self.n_confounders, self.spec.vocab_size)
            self.token_counts.copy_(counts)
            self.token_cv.copy_(coefficient_of_variation(counts))
            self.cf_keep.copy_(select_kept_tokens(counts, self.token_cv, c.cv_threshold, c.top_k, c.cf_order))
        self.fitted.fill_(True)

    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        from affectune import missing  # RMFM: every frame dropped w.p. p ~ U(0, 1); text drops -> [UNK] ids

        return TrainViews(batch, {"masked": missing.rmfm(batch, generator)})

    def calibrate(self, ctx: EvalContext) -> None:
        """Choose tau on validation by the loop's selection metric (on the complete or the masked
        copy, whichever that metric reads); ties -> the smaller tau."""
        if not self.cf_active:
            return
        was_training = self.training
        self.eval()
        prefix, metric = ctx.select_metric.split("_", 1)
        data = ctx.valid if prefix == "val" else ctx.valid_masked
        pair = ctx.predict(data, self.factual_and_counterfactual)  # (N, 2k)
        k = self.spec.out_dim
        best_tau, best = 0.0, None
        for tau in self.config.tau_grid().tolist():
            value = float(ctx.score(data, pair[:, :k] - tau * pair[:, k:])[metric])
            if not math.isfinite(value):
                continue
            if best is None or (value > best if ctx.direction == "max" else value < best):
                best_tau, best = tau, value
        self.tau.fill_(best_tau)
        self.train(was_training)

    def on_epoch_end(self, epoch: int, ctx: EpochContext) -> dict[str, float] | None:
        return {"tau": float(self.tau)} if self.cf_active else None

    # -- losses -----------------------------------------------------------------------------------
    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        """One step: complete task loss + masked MSSD losses. Two steps: step 0 the complete task
        loss, step 1 the masked MSSD losses against a no-grad complete forward."""
        complete = views.complete
        masked = views.views.get("masked", complete)  # without an RMFM view the complete one stands in
        if self.config.two_step and step == 0:
            task = self.task_loss(self(complete)["pred"], complete.label)
            return {"loss": task, "task": task.detach()}
        if self.config.two_step:
            with torch.no_grad():
                teacher = self(complete, need_attn=True)
            parts = self.mssd_losses(teacher, masked, complete)
            total = parts.pop("total")
        else:
            teacher = self(complete, need_attn=True)
            task = self.task_loss(teacher["pred"], complete.label)
            parts = self.mssd_losses(teacher, masked, complete)
            total = task + parts.pop("total")
            parts["task"] = task
        return {"loss": total, **{k: v.detach() for k, v in parts.items()}}

    def mssd_losses(self, teacher: dict, masked: Batch, complete: Batch) -> dict[str, torch.Tensor]:
        """Masked-view task loss + the three distillation losses (teacher outputs detached)."""
        c = self.config
        student = self(masked, need_attn=True)
        task_m = self.task_loss(student["pred"], masked.label)
        joint = 1 - F.cosine_similarity(student["joint"], teacher["joint"].detach(), dim=-1).mean()
        attn = attention_kl(teacher["attn"][-1].detach(), student["attn"][-1], teacher["valid"])
        recon = self.recon_loss(student, masked, complete)
        total = task_m + c.joint_weight * joint + c.attn_weight * attn + c.recon_weight * recon
        return {"total": total, "task_masked": task_m, "joint": joint, "attn": attn, "recon": recon}

    def recon_loss(self, student: dict, masked: Batch, complete: Batch) -> torch.Tensor:
        """Sum over modalities of the SmoothL1 reconstruction of the complete inputs at dropped positions."""
        total = 0.0
        for m in MODALITIES:
            target = complete.features(m)  # (B, T_m, D_m)
            pred = self.reconstruct(student["hidden"][m], m, target.shape[1])  # (B, T_m, D_m)
            total = total + masked_recon_loss(pred, target, masked.dropped[m] & masked.valid[m])
        return total

    def reconstruct(self, h: torch.Tensor, m: str, frames: int) -> torch.Tensor:
        """Decoder of modality m: word-level (B, T_t, d) -> (B, frames, D_m)."""
        if m == "text":
            return self.recon["text"](h)
        h = fit_frames(h, self.text_len).transpose(1, 2)  # (B, d, T_t)
        h = F.relu(self.recon_time[m](h)).transpose(1, 2)  # (B, T_m(spec), d)
        return fit_frames(self.recon[m](h), frames)  # (B, frames, D_m)

    # -- forward ----------------------------------------------------------------------------------
    def embed(self, batch: Batch) -> tuple[dict, dict]:
        """Conv1d(k=1) projections, [UNK] substitution, WSAM: word-level {m: (B, T_t, d)} and valid masks."""
        h = {m: zero_padding(self.proj[m](batch.features(m).transpose(1, 2)).transpose(1, 2), batch.valid[m])
             for m in MODALITIES}  # (B, T_m, d)
        if batch.tokens is not None and self.spec.vocab_size:
            unknown = torch.isin(batch.tokens, torch.tensor((UNK_ID, MASK_ID), device=batch.tokens.device))
            unknown = unknown & batch.valid["text"]  # (B, T_t) dropped or counterfactually masked words
            h["text"] = torch.where(unknown.unsqueeze(-1), self.unk.to(h["text"].dtype), h["text"])
        valid = dict(batch.valid)
        if self.compress:
            for m in ("audio", "vision"):
                if self.config.use_wsam:
                    h[m], valid[m] = self.wsam[m](h["text"], batch.valid["text"], h[m], batch.valid[m])
                else:
                    h[m], valid[m] = resample_to_text(h[m], batch.valid[m], batch.valid["text"], self.spec.seq_lens[m],
                                                      self.text_len)
        return h, valid

    def forward(self, batch: Batch, need_attn: bool | None = None) -> dict:
        """{"pred", "joint" (B, 3d), "attn" (per layer (B, h, 3T, 3T) tav attention, or None unless
        `need_attn`, default: in training), "valid" (B, 3T), "hidden" {m: (B, T, d)}}."""
        need_attn = self.training if need_attn is None else need_attn
        h, valid = self.embed(batch)
        T = h["text"].shape[1]
        h = {m: zero_padding(self.gru[m](h[m])[0], valid[m]) for m in MODALITIES}  # (B, T, d) each
        x = torch.cat([h[m] for m in MODALITIES], 1)  # (B, 3T, d)
        mask = torch.cat([valid[m] for m in MODALITIES], 1)  # (B, 3T)
        segment = torch.arange(3, device=x.device).repeat_interleave(T)  # (3T,) 0 text, 1 audio, 2 vision
        # positions fixed by the dataset's text length (not the batch's), so padding changes nothing
        offsets = segment * self.text_len + torch.arange(T, device=x.device).repeat(3)  # (3T,)
        pos = sinusoidal_table(int(offsets.max()) + 1, x.shape[-1], x.device, x.dtype)[offsets]  # (3T, d)
        x = zero_padding(F.dropout(x + pos, self.config.embed_dropout, self.training), mask)
        attns = []
        for layer in self.layers:
            x, attn = layer(x, mask, need_attn)
            attns.append(attn)
        x = zero_padding(self.final_norm(x), mask)
        hidden = {m: x[:, k * T:(k + 1) * T] for k, m in enumerate(MODALITIES)}  # (B, T, d) each
        g = torch.cat([self.pool[m](hidden[m], valid[m]) for m in MODALITIES], -1)  # (B, 3d)
        joint = g + self.proj2(F.dropout(F.relu(self.proj1(g)), self.config.out_dropout, self.training))
        return {"pred": self.output(joint), "joint": joint, "attn": attns, "valid": mask, "hidden": hidden}

    def output(self, joint: torch.Tensor) -> torch.Tensor:
        """MACI's backdoor-adjusted output (log p, or the prior-weighted regression), or a linear head."""
        if not self.config.use_maci:
            out = self.head(joint)  # (B, out_dim)
            return out.squeeze(-1) if self.is_regression else out
        D = [self.spec.dims[m] for m in MODALITIES]
        parts = torch.split(self.confounders, D, dim=1)  # 3 x (C, D_m)
        conf = torch.cat([self.confounder_enc[m](p) for m, p in zip(MODALITIES, parts)], -1)  # (C, 3d)
        prior = self.prior
        if self.config.eval_prior == "uniform" and not self.training:
            prior = torch.full_like(prior, 1.0 / prior.numel())
        B = joint.shape[0]
        f = torch.stack([clf(torch.cat([joint, conf[z].expand(B, -1)], -1))
                         for z, clf in enumerate(self.classifiers)], 1)  # (B, C_z, out_dim)
        if self.is_regression:
            return (f.squeeze(-1) * prior).sum(1)  # (B,) sum_z P(z) f_z
        log_p = f.log_softmax(-1) + torch.log(prior.clamp_min(1e-12))[None, :, None]  # (B, C_z, C)
        return torch.logsumexp(log_p, 1)  # (B, C) log sum_z softmax(f_z) P(z)

    # -- prediction with the counterfactual --------------------------------------------------------
    def counterfactual_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) ids with every non-special token that the rule does not keep replaced by [MASK]."""
        special = torch.isin(tokens, torch.tensor(SPECIAL_IDS, device=tokens.device))
        keep = self.cf_keep[tokens.clamp(0, self.cf_keep.numel() - 1)]
        return torch.where(special | keep, tokens, torch.full_like(tokens, MASK_ID))

    def score(self, pred: torch.Tensor) -> torch.Tensor:
        """Scores that tau combines: log-probabilities (classification) or the regression value, (B, k)."""
        return pred.reshape(-1, 1) if self.is_regression else pred.log_softmax(-1)

    def factual_and_counterfactual(self, batch: Batch) -> torch.Tensor:
        """(B, 2k): the factual scores and those with the counterfactual text."""
        if batch.tokens is None:
            raise ValueError("cider: the counterfactual needs token ids, and this batch has none")
        factual = self.score(self(batch)["pred"])
        cf = self.score(self(batch.replace(tokens=self.counterfactual_tokens(batch.tokens)))["pred"])
        return torch.cat([factual, cf], -1)

    def predict(self, batch: Batch) -> torch.Tensor:
        tau = float(self.tau)
        if not (self.cf_active and tau > 0 and batch.tokens is not None):
            return self(batch)["pred"]
        k = self.spec.out_dim
        pair = self.factual_and_counterfactual(batch)
        out = pair[:, :k] - tau * pair[:, k:]
        return out.squeeze(-1) if self.is_regression else out


# ----------------------------------------------------------------------------- helpers


def pooled_inputs(x: torch.Tensor, valid: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Utterance vectors: masked time-mean of (N, T, D) inputs -> (N, D), in chunks (memory)."""
    return torch.cat([masked_mean(x[i:i + chunk].double(), valid[i:i + chunk])
                      for i in range(0, x.shape[0], chunk)]) if x.shape[0] else x.new_zeros(0, x.shape[2])


def fit_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T, d) cut or zero-extended to `frames` frames."""
    T = x.shape[1]
    return x[:, :frames] if T >= frames else F.pad(x, (0, 0, 0, frames - T))


def resample_to_text(x: torch.Tensor, valid: torch.Tensor, text_valid: torch.Tensor, length: int,
                     text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ablation of WSAM: the (B, T_m, d) frames linearly resampled to the text axis."""
    x = fit_frames(x, length).transpose(1, 2)  # (B, d, T_m)
    y = F.interpolate(x, size=text_len, mode="linear", align_corners=True).transpose(1, 2)  # (B, T_t, d)
    y = fit_frames(y, text_valid.shape[1])
    v = text_valid & valid.any(1, keepdim=True)
    return zero_padding(y, v), v


# ----------------------------------------------------------------------------- presets and spaces

CIDer.presets = {
    # the authors' code: Adam, lr 1e-3, batch 128, 200 epochs max, patience 10, d 32, 3 layers, 8 heads,
    # two optimiser steps per batch, uniform P(z) at evaluation
    "paper": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "epochs": 200, "patience": 10,
              "model_config": {"hidden": 32, "layers": 3, "heads": 8, "out_dropout": 0.3, "embed_dropout": 0.2,
                               "joint_weight": 0.5, "attn_weight": 0.1, "recon_weight": 0.6, "two_step": True,
                               "cv_threshold": 0.1, "top_k": 100, "tau_min": 0.0, "tau_max": 3.0,
                               "tau_step": 0.1}},
}
CIDer.study_defaults = {
    # a few minutes on 2 cores: d 32 (divisible by every head count searched), 2 layers
    "epochs": 6, "batch_size": 32, "lr": 2e-3, "model_config": {"hidden": 32, "layers": 2, "heads": 4},
}


@register_space("cider", "paper", description="the authors' Optuna space: layers 1-4, heads 1/2/4/8, "
                "dropouts 0-0.5, the three distillation weights 0-1 (step 0.1)")
def cider_paper(trial) -> dict:
    trial.suggest_int("layers", low=1, high=4)
    trial.suggest_categorical("heads", (1, 2, 4, 8))
    for name in ("dropout", "out_dropout", "embed_dropout"):
        trial.suggest_float(name, low=0.0, high=0.5, step=0.1)
    for name in ("joint_weight", "attn_weight", "recon_weight"):
        trial.suggest_float(name, low=0.0, high=1.0, step=0.1)
    return {}


@register_space("cider", "wide", description="paper space + CV threshold, top-K, tau range, lr")
def cider_wide(trial) -> dict:
    cider_paper(trial)
    trial.suggest_float("cv_threshold", low=0.0, high=1.0)
    trial.suggest_int("top_k", low=20, high=1000, log=True)
    trial.suggest_float("tau_max", low=0.5, high=5.0)
    trial.suggest_float("lr", low=3e-4, high=1e-2, log=True)
    return {}
