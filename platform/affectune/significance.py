"""Is one method really better than another? Two paired tests for the comparison tables.

* Over training seeds: the paired t-test on per-seed scores (run `s` of both methods shares the
  seed, the data and the test masks). With the 5 seeds a comparison uses, the exact Wilcoxon
  signed-rank test cannot reject at 5% at all (its smallest two-sided p with n = 5 is 2/32 =
  0.0625), so it would report "not significant" whatever the gap; the t-test can, at the price of
  assuming roughly normal differences. Effect size: Cohen's d_z = mean(d) / sd(d).
* Over test samples: the paired bootstrap (resample the test samples with replacement; both
  methods are scored on the same resample). Resamples are multiplicity weights (B, N), so every
  metric is a weighted sum over the samples and all B resamples cost one matrix product.
  p-value: twice the share of resampled differences on the far side of zero (two-sided, percentile
  bootstrap); interval: the 2.5 and 97.5 percentiles of the resampled differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SEED_TEST = "paired t"
"""Name of the test over seeds, as stored in the significance table."""

BOOTSTRAP_METRICS = ("mae", "war", "wf1")
"""Metrics `weighted_metric` computes (the tasks' primary metrics and accuracy)."""


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, two-sided p, Cohen's d_z) of the paired differences a - b (n >= 2 pairs).

    Identical differences (sd 0): p = 1 when they are all zero, else 0 (a certain difference),
    t and d_z are ±inf."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"paired_t needs two equal-length sequences of >= 2 values, got {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError(f"paired_t: non-finite differences {d.tolist()}")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return (math.copysign(math.inf, mean), 0.0, math.copysign(math.inf, mean)) if mean else (0.0, 1.0, 0.0)
    t = mean / (sd / math.sqrt(d.size))
    return t, float(2.0 * stats.t.sf(abs(t), df=d.size - 1)), mean / sd


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multiplicities of `n_boot` resamples of n samples with replacement (seeded)."""
    if n < 1 or n_boot < 1:
        raise ValueError(f"resample_weights needs n >= 1 and n_boot >= 1, got {n}, {n_boot}")
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot, n), dtype=np.float64)
    np.add.at(weights, (np.arange(n_boot)[:, None], index), 1.0)
    return weights


def weighted_metric(metric: str, y_true: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`metric` of (y_true, pred) on each resample (row of `weights`, (B, N)): (B,) values.

    Equal to `affectune.metrics.compute_metrics` on the resampled arrays (a test checks it).
    pred: (N,) or (N, 1) regression outputs, (N, C) class scores or (N,) class ids."""
    y = np.asarray(y_true)
    p = np.asarray(pred)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))  # (B, N)
    if metric == "mae":
        return w @ np.abs(p.reshape(len(y)).astype(np.float64) - y) / w.sum(1)
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"no bootstrap for metric {metric!r}; have {BOOTSTRAP_METRICS}")
    labels = np.argmax(p, axis=1) if p.ndim == 2 and p.shape[1] > 1 else p.reshape(len(y))
    y, labels = y.astype(np.int64), labels.astype(np.int64)
    if metric == "war":
        return w @ (labels == y).astype(np.float64) / w.sum(1)
    classes = np.union1d(y, labels)
    truth = (y[:, None] == classes).astype(np.float64)  # (N, K)
    guess = (labels[:, None] == classes).astype(np.float64)
    support, predicted, hits = w @ truth, w @ guess, w @ (truth * guess)  # (B, K) each
    denom = support + predicted
    f1 = np.divide(2.0 * hits, denom, out=np.zeros_like(denom), where=denom > 0)
    return (f1 * support).sum(1) / support.sum(1)


def paired_bootstrap(stat_a: np.ndarray, stat_b: np.ndarray) -> tuple[float, float, float]:
    """(two-sided p, 2.5%, 97.5%) of the resampled differences stat_a - stat_b (both (B,), from
    the same resamples). p = min(1, 2 * min(share <= 0, share >= 0))."""
    diff = np.asarray(stat_a, dtype=np.float64) - np.asarray(stat_b, dtype=np.float64)
    if diff.ndim != 1 or diff.size < 1:
        raise ValueError(f"paired_bootstrap needs two equal-length 1-D arrays, got {diff.shape}")
    p = min(1.0, 2.0 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
    low, high = np.percentile(diff, [2.5, 97.5])
    return p, float(low), float(high)


def auilc_weights(rates: Sequence[float]) -> np.ndarray:
    """w with auilc(rates, v) == w @ v (AUILC is linear in the curve): one rule, affectune.metrics.auilc."""
    from affectune.metrics import auilc

    eye = np.eye(len(rates))
    return np.array([auilc(rates, eye[k]) for k in range(len(rates))])
