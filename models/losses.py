"""Distribution-matching losses shared by the distillation methods (pure functions, no parameters).

* `gaussian_mmd`: Maximum Mean Discrepancy with a sum of Gaussian kernels (Gretton et al. 2012;
  the multi-bandwidth sum of DAN, Long et al. 2015), the plug-in estimator
  ||mean phi(x) - mean phi(y)||^2 of UMDF's eq. 2.
* `js_divergence`: Jensen-Shannon divergence between the softmax distributions of two logit
  tensors (natural log), UMDF's eq. 5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances: x (n, d), y (m, d) -> (n, m), exact (no |x|^2 - 2xy + |y|^2 round-off)."""
    return (x.unsqueeze(1) - y.unsqueeze(0)).square().sum(-1)


def mmd_bandwidths(x: torch.Tensor, y: torch.Tensor, num_kernels: int = 5, kernel_mul: float = 2.0) -> torch.Tensor:
    """DAN's bandwidths: base = mean squared distance over distinct pairs of the pooled sample
    (no gradient), times kernel_mul ** (k - num_kernels // 2) for k = 0..num_kernels-1. (num_kernels,)"""
    if num_kernels < 1 or kernel_mul <= 0:
        raise ValueError(f"need num_kernels >= 1 and kernel_mul > 0, got {num_kernels}, {kernel_mul}")
    with torch.no_grad():
        pooled = torch.cat([x, y]).float()  # (n + m, d)
        n = pooled.shape[0]
        base = pairwise_sq_dists(pooled, pooled).sum() / max(n * n - n, 1)
        base = base.clamp_min(1e-8)  # identical samples: any bandwidth gives MMD 0
        powers = torch.arange(num_kernels, dtype=pooled.dtype, device=pooled.device) - num_kernels // 2
    return (base * kernel_mul ** powers).to(x.dtype)


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: torch.Tensor | None = None,
                 num_kernels: int = 5, kernel_mul: float = 2.0) -> torch.Tensor:
    """Squared MMD between samples x (n, d) and y (m, d) under k(u, v) = sum_s exp(-|u - v|^2 / bw_s).

    The plug-in (V-statistic) estimator mean k(x, x') + mean k(y, y') - 2 mean k(x, y): >= 0 and
    exactly 0 when the two samples are equal. `bandwidths` (S,) default to `mmd_bandwidths`."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"MMD needs (n, d) and (m, d) samples, got {tuple(x.shape)} and {tuple(y.shape)}")
    if bandwidths is None:
        bandwidths = mmd_bandwidths(x, y, num_kernels, kernel_mul)
    bandwidths = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device).reshape(-1)  # (S,)

    def kernel(u, v):  # (n, m): sum over bandwidths
        return torch.exp(-pairwise_sq_dists(u, v).unsqueeze(-1) / bandwidths).sum(-1)

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Mean over rows of JS(softmax(p) || softmax(q)) = (KL(P || M) + KL(Q || M)) / 2, M = (P + Q) / 2.

    logits (B, C) -> scalar, natural log (in [0, ln 2]); symmetric, gradient to both sides."""
    if logits_p.shape != logits_q.shape or logits_p.dim() != 2:
        raise ValueError(f"JS needs two (B, C) logit tensors, got {tuple(logits_p.shape)} and {tuple(logits_q.shape)}")
    log_p, log_q = F.log_softmax(logits_p, -1), F.log_softmax(logits_q, -1)  # (B, C)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), 0) - math.log(2.0)  # log of the mixture
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)  # (B,)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).mean()
