"""MCULoRA: modality-combination-aware low-rank adaptation for incomplete multimodal emotion recognition.

Paper: "A Robust Incomplete Multimodal Low-Rank Adaptation Approach for Emotion Recognition"
(arXiv 2507.11202; shared/papers/002): MCLA (sec. 3.3) and DPFT (sec. 3.4). Facts from the
authors' code are in shared/methods.md. Pipeline (utterance level, c = the sample's available
modality combination, one of 7, read from `Batch.available`):

    u_m = mean of X_m over valid frames, zeroed when m is absent          (B, D_m)
    common stream:          every linear = base + shared LoRA             (B, 3, d) tokens s_m
    characteristic stream:  every linear = base + private LoRA_c          (B, 3, d) tokens c_m
      each stream: in_proj_m (D_m -> d) -> depth x pre-norm transformer block over the 3 modality
      tokens (absent modalities masked as keys) -> concat of present tokens  (B, 3d)
      -> hidden = dropout(relu(proj(h))) + h -> head                      y (B,) or (B, C)
    w = sigmoid(MLP([hidden_common, hidden_char]))                        (B, 1)
    pred = (1 - w) * y_common + w * y_characteristic
    loss = task(pred) + orth_weight * mean cos^2(s_m, c_m) over present modalities  (soft orthogonality)

Training samples whole-modality combinations with probabilities p (7,) held in a buffer; DPFT moves
p after each epoch: per combination, the Jensen-Shannon divergence between softmax(s_m) and
softmax(c_m) is measured on the VALIDATION split with that combination's modalities removed; the
combinations whose divergence changed least since the last epoch (they decouple slowly) gain
probability, the fastest lose it (a rank-based push of `dpft_step`, then a projection onto the
probability simplex within [dpft_min_prob, dpft_max_prob]).

Decisions where the paper is silent (see docs/models.md):
  * Utterance-level data has one vector per modality, so the transformer attends across the three
    modality tokens (the authors' block attends over the utterances of a dialogue).
  * The soft orthogonality loss is the mean squared cosine similarity of shared and characteristic
    token pairs (0 exactly when orthogonal); the authors' code has no such loss.
  * The weighting MLP (w) is a plain MLP outside both streams; LoRA scale is 1 as in the authors' code.
  * DPFT acts on the 7 combination probabilities directly (the authors nudge 3 per-modality keep
    probabilities), reads validation instead of test, and keeps p a distribution inside the clip range.
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
from affectune.models.base import EpochContext, MERModel, ModelConfig, TrainViews
from affectune.models.layers import MLP, LoRALinear, masked_mean
from affectune.search_spaces import register_space

NUM_COMBINATIONS = 7
"""Available-modality combinations (affectune.missing.AVAILABLE_COMBINATIONS order)."""


@dataclass
class MCULoRAConfig(ModelConfig):
    """MCULoRA hyper-parameters. `hidden` and `dropout` come from ModelConfig (paper: 256, 0.5)."""

    hidden: int = 256
    """Model width d (authors' code: 256)."""
    dropout: float = 0.5
    """Dropout on projections, attention/MLP outputs and the fusion layer (authors: 0.5)."""
    depth: int = 4
    """Transformer blocks per stream (authors: 4)."""
    heads: int = 2
    """Attention heads (authors: 2)."""
    mlp_mult: int = 1
    """MLP width of a block as a multiple of hidden (authors' mlp_ratio: 1)."""
    rank_proj: int = 4
    """LoRA rank of the input and attention projections (authors: 4)."""
    rank_mlp: int = 8
    """LoRA rank of the blocks' MLP layers (methods.md: 8)."""
    rank_head: int = 4
    """LoRA rank of the fusion projection and the output head (authors: 4)."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch input (authors: 0.1)."""
    lora_scale: float = 1.0
    """Multiplier of every LoRA update (authors: 1.0, no alpha / r)."""
    orth_weight: float = 0.001
    """Weight of the soft orthogonality loss between shared and characteristic tokens (paper: 0.001)."""
    dpft: bool = True
    """Adjust combination probabilities after each epoch (DPFT); False keeps them uniform."""
    dpft_step: float = 0.005
    """Probability pushed to the slowest-decoupling combination per epoch (minus to the fastest)."""
    dpft_min_prob: float = 0.07
    """Lower clip of every combination probability (uniform is 1/7 = 0.143)."""
    dpft_max_prob: float = 0.22
    """Upper clip of every combination probability."""
    lora_lr_scale: float = 1.0
    """LoRA weights' learning rate as a multiple of the train config's lr (base weights: 1x)."""
    lora_weight_decay_scale: float = 1.0
    """LoRA weights' weight decay as a multiple of the train config's weight_decay."""
    weight_mlp_hidden: int = 64
    """Hidden width of the MLP that gives the fusion weight w."""

    def __post_init__(self):
        if self.hidden < 1 or self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be positive and divisible by heads ({self.heads})")
        for name in ("depth", "heads", "mlp_mult", "rank_proj", "rank_mlp", "rank_head", "weight_mlp_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("orth_weight", "dpft_step", "lora_lr_scale", "lora_weight_decay_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        uniform = 1.0 / NUM_COMBINATIONS
        if not 0.0 <= self.dpft_min_prob <= uniform <= self.dpft_max_prob <= 1.0:
            raise ValueError(f"dpft_min_prob ({self.dpft_min_prob}) <= 1/7 <= dpft_max_prob "
                             f"({self.dpft_max_prob}) must hold, so the uniform start lies in the clip range")


# ----------------------------------------------------------------------------- losses and DPFT rule


def soft_orthogonality(shared: torch.Tensor, characteristic: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine similarity of (B, M, d) token pairs over present (B, M) positions; 0 if none."""
    cos = F.cosine_similarity(shared, characteristic, dim=-1, eps=1e-8)  # (B, M)
    w = present.to(cos.dtype)
    return (cos.square() * w).sum() / w.sum().clamp_min(1.0)


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) of softmax(p) and softmax(q) over the last axis: (..., d) -> (...)."""
    dtype = torch.promote_types(p_logits.dtype, torch.float32)  # at least fp32, also under autocast
    p, q = p_logits.to(dtype).softmax(-1), q_logits.to(dtype).softmax(-1)
    log_m = (0.5 * (p + q)).log()
    kl_pm = (p * (p.log() - log_m)).sum(-1)
    kl_qm = (q * (q.log() - log_m)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def project_to_capped_simplex(q: torch.Tensor, lo: float, hi: float, iters: int = 100) -> torch.Tensor:
    """Euclidean projection of q (K,) onto {p : sum p = 1, lo <= p_k <= hi}: p = clip(q - tau, lo, hi).

    tau is found by bisection (sum is monotone in tau); needs K * lo <= 1 <= K * hi."""
    q = q.double()
    a, b = float(q.min()) - hi, float(q.max()) - lo  # sum(clip(q - a)) = K*hi >= 1 >= K*lo = sum(clip(q - b))
    for _ in range(iters):
        tau = 0.5 * (a + b)
        if float((q - tau).clamp(lo, hi).sum()) > 1.0:
            a = tau
        else:
            b = tau
    return (q - 0.5 * (a + b)).clamp(lo, hi)


def dpft_update(probs: torch.Tensor, prev_js: torch.Tensor, js: torch.Tensor, step: float,
                lo: float, hi: float) -> torch.Tensor:
    """One DPFT step: combinations ranked by |JS change| (slowest first) get a push from +step to -step.

    The push is linear in the rank and sums to zero; the result is projected back onto the simplex
    inside [lo, hi]. probs, prev_js, js: (K,). Returns (K,) float64."""
    k = probs.numel()
    change = (js.double() - prev_js.double()).abs()  # (K,)
    rank = torch.argsort(torch.argsort(change, stable=True), stable=True).double()  # 0 = slowest
    push = 1.0 - 2.0 * rank / (k - 1)  # (K,) from +1 (slowest) to -1 (fastest)
    return project_to_capped_simplex(probs.double() + step * push, lo, hi)


# ----------------------------------------------------------------------------- one stream's layers


class LoRAAttention(nn.Module):
    """Multi-head self-attention whose q, k, v and output projections are LoRALinears.

    x (B, M, d), key_valid (B, M) bool, route (B,) or None -> (B, M, d). A sample with no valid key
    attends everywhere (finite; its tokens are discarded downstream)."""

    def __init__(self, dim: int, heads: int, rank: int, c: MCULoRAConfig):
        super().__init__()
        self.heads = heads
        lora = lambda: LoRALinear(dim, dim, rank, NUM_COMBINATIONS, c.lora_dropout, c.lora_scale)  # noqa: E731
        self.q, self.k, self.v, self.out = lora(), lora(), lora(), lora()

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor, route: torch.Tensor | None) -> torch.Tensor:
        B, M, d = x.shape
        split = lambda t: t.view(B, M, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731  (B, h, M, d/h)
        q, k, v = split(self.q(x, route)), split(self.k(x, route)), split(self.v(x, route))
        allowed = (key_valid | ~key_valid.any(1, keepdim=True))[:, None, None, :]  # (B, 1, 1, M)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, h, M, d/h)
        return self.out(ctx.transpose(1, 2).reshape(B, M, d), route)


class LoRABlock(nn.Module):
    """Pre-norm transformer block (timm's Block, as the authors use): x + Attn(LN x); x + MLP(LN x)."""

    def __init__(self, c: MCULoRAConfig):
        super().__init__()
        d = c.hidden
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = LoRAAttention(d, c.heads, c.rank_proj, c)
        self.fc1 = LoRALinear(d, c.mlp_mult * d, c.rank_mlp, NUM_COMBINATIONS, c.lora_dropout, c.lora_scale)
        self.fc2 = LoRALinear(c.mlp_mult * d, d, c.rank_mlp, NUM_COMBINATIONS, c.lora_dropout, c.lora_scale)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor, route: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_valid, route))  # (B, M, d)
        h = self.drop(F.gelu(self.fc1(self.norm2(x), route)))  # (B, M, mlp_mult * d)
        return x + self.drop(self.fc2(h, route))


# ----------------------------------------------------------------------------- the model


@register("mculora")
class MCULoRA(MERModel):
    """Shared and per-combination private LoRA on every linear layer, weighted fusion, DPFT sampling."""

    config_class = MCULoRAConfig

    def __init__(self, config: MCULoRAConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        c, d = config, config.hidden
        lora = lambda i, o, r: LoRALinear(i, o, r, NUM_COMBINATIONS, c.lora_dropout, c.lora_scale)  # noqa: E731
        self.in_proj = nn.ModuleDict({m: lora(spec.dims[m], d, c.rank_proj) for m in MODALITIES})
        self.blocks = nn.ModuleList(LoRABlock(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(d)
        width = len(MODALITIES) * d
        self.fuse = lora(width, width, c.rank_head)  # the authors' proj1
        self.head = lora(width, spec.out_dim, c.rank_head)
        self.weight_mlp = MLP(2 * width, c.weight_mlp_hidden, 1, c.dropout)
        self.drop = nn.Dropout(c.dropout)
        # DPFT state (buffers: checkpointed, identical on every data-parallel rank)
        self.register_buffer("dpft_probs", torch.full((NUM_COMBINATIONS,), 1.0 / NUM_COMBINATIONS))
        self.register_buffer("dpft_prev_js", torch.zeros(NUM_COMBINATIONS))
        self.register_buffer("dpft_measured", torch.zeros((), dtype=torch.long))  # epochs with a JS measurement

    # -- forward ----------------------------------------------------------------------------------
    def stream(self, u: list[torch.Tensor], present: torch.Tensor, route: torch.Tensor | None):
        """One stream: pooled inputs 3 x (B, D_m) -> tokens (B, 3, d), hidden (B, 3d), y."""
        tokens = torch.stack([self.drop(self.in_proj[m](u[k], route)) for k, m in enumerate(MODALITIES)], 1)
        for block in self.blocks:
            tokens = block(tokens, present, route)  # (B, 3, d)
        tokens = self.norm(tokens) * present.unsqueeze(-1).to(tokens.dtype)  # absent modalities -> 0
        h = tokens.flatten(1)  # (B, 3d)
        hidden = self.drop(F.relu(self.fuse(h, route))) + h  # (B, 3d)
        y = self.head(hidden, route)  # (B, out_dim)
        return tokens, hidden, (y.squeeze(-1) if self.is_regression else y)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        from affectune.missing import combination_index  # reads Batch.available only

        present = batch.available  # (B, 3) bool, MODALITIES order
        # Utterance level: mean over valid frames; an absent modality contributes exactly 0, so its
        # fill values (zero or gaussian) never reach the prediction.
        u = [masked_mean(batch.features(m), batch.valid[m]) * present[:, k:k + 1].to(batch.text.dtype)
             for k, m in enumerate(MODALITIES)]  # 3 x (B, D_m)
        combination = combination_index(batch)  # (B,) long: which private adapters this sample uses
        shared, hidden_s, y_common = self.stream(u, present, None)
        charac, hidden_c, y_char = self.stream(u, present, combination)
        w = torch.sigmoid(self.weight_mlp(torch.cat([hidden_s, hidden_c], -1)))  # (B, 1)
        w_y = w.squeeze(-1) if self.is_regression else w
        pred = (1 - w_y) * y_common + w_y * y_char
        return {"pred": pred, "y_common": y_common, "y_characteristic": y_char, "w": w.squeeze(-1),
                "shared": shared, "characteristic": charac, "present": present, "combination": combination}

    # -- training -----------------------------------------------------------------------------------
    def train_policy(self, batch: Batch, generator: torch.Generator) -> TrainViews:
        from affectune.missing import combination_sampling

        view, ids = combination_sampling(batch, generator, self.dpft_probs.cpu())  # the sampler works on CPU
        return TrainViews(batch, {"masked": view}, combination={"masked": ids})

    def training_losses(self, views: TrainViews, step: int = 0) -> dict[str, torch.Tensor]:
        """task(pred) + orth_weight * soft orthogonality, averaged over the trained views."""
        task, orth = [], []
        for view in views.trained().values():
            out = self(view)
            task.append(self.task_loss(out["pred"], view.label))
            orth.append(soft_orthogonality(out["shared"], out["characteristic"], out["present"]))
        task_l, orth_l = torch.stack(task).mean(), torch.stack(orth).mean()
        loss = task_l + self.config.orth_weight * orth_l
        return {"loss": loss, "task": task_l.detach(), "orth": orth_l.detach()}

    def param_groups(self, train_config: dict) -> list[dict]:
        """Base weights at the train config's lr / weight decay; LoRA adapters scaled by the config."""
        lora_ids = {id(p) for mod in self.modules() if isinstance(mod, LoRALinear) for p in mod.lora_parameters()}
        base = [p for p in self.parameters() if p.requires_grad and id(p) not in lora_ids]
        lora = [p for p in self.parameters() if p.requires_grad and id(p) in lora_ids]
        lr, wd = float(train_config["lr"]), float(train_config.get("weight_decay", 0.0))
        c = self.config
        return [{"params": base, "lr": lr, "weight_decay": wd},
                {"params": lora, "lr": lr * c.lora_lr_scale, "weight_decay": wd * c.lora_weight_decay_scale}]

    # -- DPFT -------------------------------------------------------------------------------------
    def sample_js(self, batch: Batch) -> torch.Tensor:
        """(B, 1): per sample, JS(shared, characteristic) averaged over its present modalities."""
        out = self(batch)
        js = js_divergence(out["shared"], out["characteristic"])  # (B, 3)
        w = out["present"].to(js.dtype)
        return ((js * w).sum(1) / w.sum(1).clamp_min(1.0)).unsqueeze(1)

    def combination_js(self, ctx: EpochContext) -> torch.Tensor:
        """(7,) mean JS per combination on the validation split with the other modalities removed."""
        from affectune.missing import combination_matrix, drop_modalities

        values = []
        for c in range(NUM_COMBINATIONS):
            keep = combination_matrix(torch.tensor([c]))  # (1, 3)

            def js_of(batch: Batch, keep=keep) -> torch.Tensor:
                return self.sample_js(drop_modalities(batch, keep.to(batch.label.device).expand(batch.size, -1)))

            values.append(ctx.predict(ctx.valid, js_of).mean())
        return torch.stack(values).float()

    def on_epoch_end(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        """DPFT on validation; logs the probabilities (and JS values) with the epoch's metrics."""
        c = self.config
        logged: dict[str, float] = {}
        if c.dpft:
            was_training = self.training
            self.eval()  # JS of the model as it predicts: no dropout
            try:
                js = self.combination_js(ctx).to(self.dpft_probs.device)
            finally:
                self.train(was_training)
            if int(self.dpft_measured) > 0:
                new = dpft_update(self.dpft_probs, self.dpft_prev_js, js, c.dpft_step, c.dpft_min_prob, c.dpft_max_prob)
                self.dpft_probs.copy_(new.to(self.dpft_probs.dtype))
            self.dpft_prev_js.copy_(js)
            self.dpft_measured += 1
            logged.update({f"dpft_js_{label}": float(v) for label, v in zip(combination_labels(), js)})
        logged.update({f"dpft_p_{label}": float(p) for label, p in zip(combination_labels(), self.dpft_probs)})
        return logged


def combination_labels() -> list[str]:
    """"v", "a", "t", "av", "tv", "ta", "tav"-style labels in AVAILABLE_COMBINATIONS order."""
    from affectune.missing import AVAILABLE_COMBINATIONS, subset_label

    return [subset_label(s) for s in AVAILABLE_COMBINATIONS]


# ----------------------------------------------------------------------------- presets and spaces

MCULoRA.presets = {
    # Authors' code: Adam lr 1e-4, L2 1e-5, batch 32, 100 epochs; hidden 256, depth 4, 2 heads, dropout 0.5.
    "paper": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-5, "batch_size": 32, "epochs": 100,
              "model_config": {"hidden": 256, "depth": 4, "heads": 2, "dropout": 0.5, "rank_proj": 4,
                               "rank_mlp": 8, "rank_head": 4, "lora_dropout": 0.1, "orth_weight": 0.001}},
}
MCULoRA.study_defaults = {
    # a few minutes on 2 cores: a narrow, shallow model at a larger lr than the paper's 1e-4
    "epochs": 6, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-5,
    "model_config": {"hidden": 32, "depth": 2, "dropout": 0.1},
}


def _clip_range(trial, low: float, high: float) -> dict:
    """DPFT clip range drawn as a relative half-width around uniform: [(1 - c)/7, (1 + c)/7]."""
    c = trial.suggest_float("dpft_clip", low=low, high=high)
    return {"dpft_min_prob": (1 - c) / NUM_COMBINATIONS, "dpft_max_prob": (1 + c) / NUM_COMBINATIONS}


@register_space("mculora", "paper", helpers=("dpft_clip",),
                description="LoRA ranks {2,4,8} per group, orthogonality weight, DPFT step and clip, lr near 1e-4")
def mculora_paper(trial) -> dict:
    for name in ("rank_proj", "rank_mlp", "rank_head"):
        trial.suggest_categorical(name, (2, 4, 8))
    trial.suggest_float("orth_weight", low=1e-4, high=1e-2, log=True)
    trial.suggest_float("dpft_step", low=1e-3, high=2e-2, log=True)
    trial.suggest_float("lr", low=3e-5, high=3e-4, log=True)
    return _clip_range(trial, 0.2, 0.6)


@register_space("mculora", "wide", helpers=("dpft_clip",),
                description="LoRA ranks {1..32} per group, orthogonality weight, DPFT step and clip, lr, dropout")
def mculora_wide(trial) -> dict:
    for name in ("rank_proj", "rank_mlp", "rank_head"):
        trial.suggest_categorical(name, (1, 2, 4, 8, 16, 32))
    trial.suggest_float("orth_weight", low=1e-5, high=1e-1, log=True)
    trial.suggest_float("dpft_step", low=1e-4, high=5e-2, log=True)
    trial.suggest_float("lr", low=1e-4, high=1e-2, log=True)
    trial.suggest_float("dropout", low=0.0, high=0.5)
    return _clip_range(trial, 0.1, 0.9)
