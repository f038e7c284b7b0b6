"""Layers shared by every method: masked pooling, positional encodings, cheap CPU dropout,
padding-aware Conv1D, NaN-safe attention blocks (a chunked, recomputing path for attention dropout
on the CPU), MLP and task heads.

Conventions: features are (B, T, d); `valid` masks are (B, T) bool, True inside the sequence
length (padding is False). Every block here
  * never lets a padded frame influence a valid one (keys are masked, padded inputs are zeroed
    before a convolution), so appending padding never changes a model's output;
  * is finite when a sample has no valid frame at all (length 0): attention over an all-masked
    key row returns zeros instead of softmax's NaN, pooling returns zeros.
Dropped frames (train-time or test-time missingness) are *inside* the length: they are valid
frames whose features were filled, so no block here treats them specially.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from affectune.data.schema import DatasetSpec

# ----------------------------------------------------------------------------- masks and pooling


def zero_padding(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, T, d) with padded frames set to 0."""
    return x * valid.unsqueeze(-1).to(x.dtype)


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: x (B, T, d), valid (B, T) -> (B, d); zeros for a sample with none."""
    w = valid.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def last_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The last valid frame of each sample: x (B, T, d) -> (B, d); zeros for a sample with none.

    "Last" is the highest valid index, so it also works for masks that are not a prefix."""
    B, T, _ = x.shape
    pos = torch.arange(T, device=x.device).expand(B, T)  # (B, T)
    idx = torch.where(valid, pos, torch.full_like(pos, -1)).amax(1)  # (B,), -1 = no valid frame
    out = x[torch.arange(B, device=x.device), idx.clamp_min(0)]  # (B, d)
    return out * (idx >= 0).unsqueeze(-1).to(x.dtype)


def pool(x: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    """Pool (B, T, d) -> (B, d) by "mean" (masked mean) or "last" (last valid frame)."""
    if how == "mean":
        return masked_mean(x, valid)
    if how == "last":
        return last_valid(x, valid)
    raise ValueError(f"unknown pooling {how!r}; expected 'mean' or 'last'")


# ----------------------------------------------------------------------------- positions


def sinusoidal_table(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(length, dim) sin/cos table of "Attention is all you need"; any length, no parameters."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / dim))  # (ceil(dim/2),)
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.to(dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """x (B, T, d) -> x + PE[:T]; defined for every T, so padding never changes valid frames."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + sinusoidal_table(x.shape[1], self.dim, x.device, x.dtype)


def fit_to_length(seq: torch.Tensor, length: int, batch_len: int) -> torch.Tensor:
    """Place a learned sequence of slots on a frame axis.

    seq (P, d) or (B, P, d) is resampled by linear interpolation to `length` frames (the
    dataset's padded length, fixed when the model is built), then cut or zero-extended to the
    batch's `batch_len` frames. Resampling to the fixed dataset length, not the batch length,
    keeps slot i tied to frame i, so extra padding in a batch changes nothing.
    Returns (L, d) or (B, L, d) with L = batch_len.
    """
    squeeze = seq.dim() == 2
    s = seq.unsqueeze(0) if squeeze else seq  # (B|1, P, d)
    if s.shape[1] != length:
        s = F.interpolate(s.transpose(1, 2), size=length, mode="linear",
                          align_corners=True).transpose(1, 2)  # (B|1, length, d)
    if batch_len <= length:
        s = s[:, :batch_len]
    else:
        s = F.pad(s, (0, 0, 0, batch_len - length))  # frames past the dataset length get no slot
    return s.squeeze(0) if squeeze else s


# ----------------------------------------------------------------------------- dropout


def keep_mask(shape: tuple[int, ...], p: float, device=None) -> torch.Tensor:
    """(shape) uint8, 1 = kept with probability 1 - p (p resolved to 2**-16), 0 = dropped.

    Four 16-bit draws per 64-bit random number: about 4x cheaper on the CPU than `bernoulli_`,
    which draws one number per element and was the largest single cost of attention dropout.
    uint8, not bool: multiplying by it is ~9x faster than `masked_fill_` with a bool mask."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, None)  # all 64 bits
    lanes = bits.view(torch.int16)[:n]  # (n,) uniform on [-2**15, 2**15)
    keep = torch.empty(shape, dtype=torch.uint8, device=device)
    torch.ge(lanes, round(p * 65536) - 32768, out=keep.view(-1))  # a uint8 out is 3x faster than bool
    return keep


class Dropout(nn.Dropout):
    """nn.Dropout drawing its mask with `keep_mask` on the CPU (about 3x cheaper than torch's
    `bernoulli_`, and autograd keeps 1 byte per element instead of 4); torch's kernel elsewhere.
    The same distribution as nn.Dropout (p resolved to 2**-16), another random stream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        return x.mul(keep_mask(x.shape, self.p, x.device)).mul_(1.0 / (1.0 - self.p))


# ----------------------------------------------------------------------------- projections


class TemporalConv(nn.Module):
    """Conv1D over time that respects padding: (B, T, D_in), valid (B, T) -> (B, T, d_out).

    Padded frames are zeroed before the convolution (so they equal the convolution's own zero
    padding at the sequence edge) and after it (so later blocks see clean zeros)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1, bias: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (keeps T frames), got {kernel_size}")
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = zero_padding(x, valid).transpose(1, 2)  # (B, D_in, T)
        return zero_padding(self.conv(x).transpose(1, 2), valid)  # (B, T, d_out)


class MLP(nn.Module):
    """in -> [hidden -> GELU -> dropout] x (layers - 1) -> out."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0, layers: int = 2):
        super().__init__()
        if layers < 1:
            raise ValueError(f"an MLP needs at least 1 layer, got {layers}")
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(d, hidden), nn.GELU(), Dropout(dropout)]
            d = hidden
        mods.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TaskHead(nn.Module):
    """MLP to the task's output: (B, in) -> (B,) scores for regression, (B, C) logits otherwise."""

    def __init__(self, in_dim: int, spec: DatasetSpec, hidden: int | None = None, dropout: float = 0.0,
                 layers: int = 2):
        super().__init__()
        self.regression = spec.task == "regression"
        self.mlp = MLP(in_dim, hidden or in_dim, spec.out_dim, dropout, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x)  # (B, out_dim)
        return out.squeeze(-1) if self.regression else out


# ----------------------------------------------------------------------------- attention


ATTENTION_CHUNK = 1 << 20
"""Score elements per chunk of the CPU dropout attention: one chunk's maps (4 MiB in fp32) stay
in cache while they are scaled, softmaxed, dropped and multiplied."""


def _scores_softmax(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T + bias) for pre-scaled q (n, Tq, e), k (n, Tk, e), bias (n, 1, Tk) -> (n, Tq, Tk)."""
    kt = k.transpose(1, 2)  # (n, e, Tk)
    scores = torch.bmm(q, kt) if bias is None else torch.baddbmm(bias, q, kt)
    return scores.softmax(-1)


class _ChunkedDropoutAttention(torch.autograd.Function):
    """dropout(softmax(q k^T + bias)) v over chunks of the (batch x head) axis, for the CPU.

    The composite path kept three T x T maps per attention for backward (weights, dropout noise,
    dropped weights: 12 bytes per score); this keeps a 1-byte keep mask and recomputes each chunk's
    softmax in backward (one matmul with the small head width e and a softmax). Chunks keep the maps
    in cache. Every product with a map is computed transposed, (e, T) = (e, T') x map, because a
    matmul with a long, e-wide output is 3-7x slower on the CPU than the same one with an e-high one.
    q is pre-scaled (N, Tq, e); k, v (N, Tk, e); bias (N, 1, Tk) additive (0 / -inf) or None.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, p: float):
        chunk = max(1, ATTENTION_CHUNK // (q.shape[1] * k.shape[1]))
        out_t = q.new_empty(q.shape[0], v.shape[2], q.shape[1])  # (N, e, Tq)
        keep = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=torch.uint8, device=q.device)
        with torch.autocast(q.device.type, enabled=False):  # inputs already carry autocast's dtype
            for i in range(0, q.shape[0], chunk):
                c = slice(i, i + chunk)
                weights = _scores_softmax(q[c], k[c], None if bias is None else bias[c])  # (n, Tq, Tk)
                keep[c] = keep_mask(weights.shape, p, q.device)
                torch.bmm(v[c].transpose(1, 2), weights.mul_(keep[c]).transpose(1, 2), out=out_t[c])
        ctx.save_for_backward(q, k, v, bias, keep)
        ctx.keep_prob = 1.0 - p
        return out_t.div_(ctx.keep_prob).transpose(1, 2)  # (N, Tq, e)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, keep = ctx.saved_tensors
        chunk = max(1, ATTENTION_CHUNK // (q.shape[1] * k.shape[1]))
        g = grad_out / ctx.keep_prob  # (N, Tq, e): the inverted-dropout scale, on the small side
        N, e = q.shape[0], q.shape[2]
        dq_t, dk_t = q.new_empty(N, e, q.shape[1]), k.new_empty(N, e, k.shape[1])  # (N, e, T)
        dv_t = v.new_empty(N, v.shape[2], v.shape[1])
        for i in range(0, N, chunk):
            c = slice(i, i + chunk)
            weights = _scores_softmax(q[c], k[c], None if bias is None else bias[c])  # recomputed
            d_kept = torch.bmm(g[c], v[c].transpose(1, 2)).mul_(keep[c])  # (n, Tq, Tk)
            d_scores = torch._softmax_backward_data(d_kept, weights, -1, weights.dtype)  # (n, Tq, Tk)
            torch.bmm(g[c].transpose(1, 2), weights.mul_(keep[c]), out=dv_t[c])
            torch.bmm(k[c].transpose(1, 2), d_scores.transpose(1, 2), out=dq_t[c])
            torch.bmm(q[c].transpose(1, 2), d_scores, out=dk_t[c])
        return dq_t.transpose(1, 2), dk_t.transpose(1, 2), dv_t.transpose(1, 2), None, None


def chunked_dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              allowed: torch.Tensor | None, p: float) -> torch.Tensor:
    """Attention with dropout p on the weights: q (B, h, Tq, e), k v (B, h, Tk, e) -> (B, h, Tq, e)."""
    B, h, Tq, e = q.shape
    Tk = k.shape[2]
    q = (q * (1.0 / math.sqrt(e))).reshape(B * h, Tq, e)  # scaling q is cheaper than the scores
    k, v = k.to(q.dtype).reshape(B * h, Tk, e), v.to(q.dtype).reshape(B * h, Tk, v.shape[-1])
    bias = None
    if allowed is not None:  # (B, 1, 1, Tk) -> additive (B * h, 1, Tk)
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
        bias = bias.expand(B, h, -1, Tk).reshape(B * h, -1, Tk)
    return _ChunkedDropoutAttention.apply(q, k, v, bias, p).view(B, h, Tq, -1)  # (B, h, Tq, e)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
              dropout: float = 0.0, need_weights: bool = False):
    """Scaled dot-product attention: q (B, h, Tq, e), k and v (B, h, Tk, e) -> ((B, h, Tq, e), weights).

    `allowed` (B, 1, 1, Tk) bool (True = may attend) or None (every key) must leave at least one
    key per row, so no NaN-safe softmax passes are needed (the caller handles keyless samples).
    Without weights this is one fused kernel where torch has one: SDPA (on CPU without dropout the
    flash kernel, which keeps no T x T map for backward; on GPUs with dropout too). torch's CPU
    kernels refuse dropout (`check_for_dropout`, aten/src/ATen/native/transformers/sdp_utils_cpp.h)
    and fall back to a composite that keeps three T x T maps, so on the CPU dropout goes through
    `chunked_dropout_attention`. With `need_weights` an explicit path returns weights (B, h, Tq, Tk).
    """
    if not need_weights:
        if dropout == 0.0 or q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout), None
        return chunked_dropout_attention(q, k, v, allowed, dropout), None
    scores = (q @ k.transpose(-1, -2)).mul_(1.0 / math.sqrt(q.shape[-1]))  # (B, h, Tq, Tk)
    if allowed is not None:
        scores = scores.masked_fill_(~allowed, float("-inf"))
    weights = scores.softmax(-1)
    return F.dropout(weights, dropout, training=True) @ v, weights  # (B, h, Tq, e)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a key padding mask that is finite on all-masked rows.

    query (B, Tq, d), key (B, Tk, d), value (B, Tk, d), key_valid (B, Tk) bool -> (B, Tq, d).
    A sample with no valid key gets a zero output (a residual block then leaves its input
    unchanged) and zero gradients through the attention, never NaN.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        return x.view(B, T, self.heads, d // self.heads).transpose(1, 2)  # (B, h, T, d/h)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_valid: torch.Tensor | None = None, need_weights: bool = False):
        B, Tq, d = query.shape
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"keys ({key.shape[1]}) and values ({value.shape[1]}) differ in length")
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        allowed, has_key = None, None
        if key_valid is not None:  # (no host-side check for "all valid": it would sync a GPU)
            has_key = key_valid.any(1)  # (B,)
            # rows without any valid key attend everywhere (finite) and are zeroed below
            allowed = (key_valid | ~has_key.unsqueeze(1))[:, None, None, :]  # (B, 1, 1, Tk)
        p = self.dropout if self.training else 0.0
        ctx, weights = attention(q, k, v, allowed, p, need_weights)  # (B, h, Tq, d/h)
        out = self.out_proj(ctx.transpose(1, 2).reshape(B, Tq, d))  # (B, Tq, d)
        if has_key is not None:
            out = out * has_key.to(out.dtype)[:, None, None]
        if not need_weights:
            return out
        weights = weights.mean(1)  # (B, Tq, Tk)
        return out, weights if has_key is None else weights * has_key.to(weights.dtype)[:, None, None]


class FeedForward(nn.Module):
    """Position-wise d -> ff_mult * d -> d."""

    def __init__(self, dim: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), Dropout(dropout),
                                 nn.Linear(ff_mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttentionBlock(nn.Module):
    """Transformer block whose attention reads a context: x (B, Tq, d) attends to ctx (B, Tk, d).

    x = x + Attn(x, ctx, ctx); x = x + FFN(x), with LayerNorm after (post-norm, default) or before
    (`norm_first`, as MulT) each sub-layer. Self-attention is the special case ctx = x.
    Output frames where `x_valid` is False are zeroed."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, ff_mult: int = 4, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim) if norm_first else None
        self.norm_ff = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, x_valid: torch.Tensor | None, ctx: torch.Tensor,
                ctx_valid: torch.Tensor | None) -> torch.Tensor:
        if self.norm_first:
            c = self.norm_ctx(ctx)
            x = x + self.drop(self.attn(self.norm_attn(x), c, c, ctx_valid))
            x = x + self.drop(self.ff(self.norm_ff(x)))
        else:
            x = self.norm_attn(x + self.drop(self.attn(x, ctx, ctx, ctx_valid)))
            x = self.norm_ff(x + self.drop(self.ff(x)))
        return x if x_valid is None else zero_padding(x, x_valid)  # (B, Tq, d)


class TransformerEncoderLayer(CrossAttentionBlock):
    """Self-attention block: x (B, T, d), valid (B, T) -> (B, T, d); padded keys ignored."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, valid, x, valid)


class TransformerEncoder(nn.Module):
    """`layers` TransformerEncoderLayers (plus a final LayerNorm when `norm_first`)."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float = 0.0, ff_mult: int = 4,
                 norm_first: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(dim, heads, dropout, ff_mult, norm_first)
                                    for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, valid)
        x = self.final_norm(x)
        return x if valid is None else zero_padding(x, valid)


class ResidualSelfAttention(nn.Module):
    """x (B|1, P, d) -> LayerNorm(MHSA(x) + x): DQF's query update (eq. 3) and fusion MHSA (eq. 9)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(x + self.drop(self.attn(x, x, x, valid)))


# ----------------------------------------------------------------------------- low-rank adaptation


class LoRALinear(nn.Module):
    """A linear layer with one shared and `num_private` routed low-rank updates (LoRA).

    LoRA (Hu et al., ICLR 2022): W x + b + scale * B A dropout(x), with A (r, in) Kaiming-uniform
    and B (out, r) zero, so at initialisation every adapted output equals the base layer's.
    Two paths through the same base weights (MCULoRA's MCLA; multi-task LoRA in general):
      * `forward(x)`                 base + the shared adapter, for every sample;
      * `forward(x, route)`          base + private adapter `route[b]` for sample b, route (B,) long.
    Each private adapter is its own parameter pair (`private_A.k`, `private_B.k`), so an adapter
    no sample of the batch routes to gets no gradient at all (and no optimiser update).
    x is (B, in) or (B, ..., in); the output has the same leading shape with `out` features.
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, num_private: int, dropout: float = 0.0,
                 scale: float = 1.0, bias: bool = True):
        super().__init__()
        if rank < 1 or num_private < 0:
            raise ValueError(f"LoRA rank must be >= 1 and num_private >= 0, got rank={rank}, "
                             f"num_private={num_private}")
        self.base = nn.Linear(in_dim, out_dim, bias=bias)
        self.rank, self.scale = rank, scale
        self.shared_A = nn.Parameter(torch.empty(rank, in_dim))  # (r, in)
        self.shared_B = nn.Parameter(torch.zeros(out_dim, rank))  # (out, r)
        self.private_A = nn.ParameterList(nn.Parameter(torch.empty(rank, in_dim)) for _ in range(num_private))
        self.private_B = nn.ParameterList(nn.Parameter(torch.zeros(out_dim, rank)) for _ in range(num_private))
        for a in (self.shared_A, *self.private_A):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's own init, as LoRA does
        self.lora_dropout = Dropout(dropout)

    def lora_parameters(self) -> list[nn.Parameter]:
        """The adapter weights (A and B of the shared and every private adapter), not the base."""
        return [self.shared_A, self.shared_B, *self.private_A, *self.private_B]

    def forward(self, x: torch.Tensor, route: torch.Tensor | None = None) -> torch.Tensor:
        y = self.base(x)  # (B, ..., out)
        h = self.lora_dropout(x)
        if route is None:
            return y + self.scale * (h @ self.shared_A.T @ self.shared_B.T)
        return y + self.scale * self._routed(h, route)

    def _routed(self, h: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """Per-sample private update with the adapters the batch routes to (and only those)."""
        if route.shape != h.shape[:1]:
            raise ValueError(f"route must have shape ({h.shape[0]},), got {tuple(route.shape)}")
        used = torch.unique(route).tolist()  # sorted adapter ids present in the batch
        if used[0] < 0 or used[-1] >= len(self.private_A):
            raise ValueError(f"route ids {used} out of range: this layer has {len(self.private_A)} private adapters")
        A = torch.stack([self.private_A[k] for k in used])  # (K, r, in): unused adapters stay out of the graph
        B = torch.stack([self.private_B[k] for k in used])  # (K, out, r)
        slot = torch.searchsorted(torch.tensor(used, device=route.device), route)  # (B,) index into the K used
        x = h.reshape(h.shape[0], -1, h.shape[-1])  # (B, N, in)
        low = torch.bmm(x, A[slot].transpose(1, 2))  # (B, N, r)
        out = torch.bmm(low, B[slot].transpose(1, 2))  # (B, N, out)
        return out.reshape(*h.shape[:-1], out.shape[-1])
