"""Evaluation metrics (MMSA-compatible regression, MERBench-style classification) and AUILC.

All scores are fractions (0.86, not 86.0) and plain Python floats, unrounded (MMSA rounds to 4
decimals for printing only). Implemented with numpy; tests check parity with scikit-learn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported lazily by auilc_table
    import pandas as pd

TASKS: tuple[str, ...] = ("regression", "classification")


@dataclass(frozen=True)
class MetricInfo:
    """Static description of one metric."""

    name: str
    """Key in the metric dicts, e.g. "non0_acc2"."""
    direction: str
    """"max" if larger is better, "min" otherwise."""
    task: str
    """"regression" or "classification"."""
    label: str
    """Display label for tables and plots, e.g. "Acc2 (non0)"."""

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ValueError(f"metric {self.name}: direction must be 'max' or 'min', got {self.direction!r}")
        if self.task not in TASKS:
            raise ValueError(f"metric {self.name}: task must be one of {TASKS}, got {self.task!r}")


METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo("has0_acc2", "max", "regression", "Acc2 (has0)"),
        MetricInfo("has0_f1", "max", "regression", "F1 (has0)"),
        MetricInfo("non0_acc2", "max", "regression", "Acc2 (non0)"),
        MetricInfo("non0_f1", "max", "regression", "F1 (non0)"),
        MetricInfo("acc5", "max", "regression", "Acc5"),
        MetricInfo("acc7", "max", "regression", "Acc7"),
        MetricInfo("mae", "min", "regression", "MAE"),
        MetricInfo("corr", "max", "regression", "Corr"),
        MetricInfo("war", "max", "classification", "WAR (accuracy)"),
        MetricInfo("uar", "max", "classification", "UAR"),
        MetricInfo("wf1", "max", "classification", "WF1"),
    )
}
"""Every fixed-name metric. Per-class scores f1_0, f1_1, ... are described by `metric_info`."""

PRIMARY_METRIC: dict[str, str] = {"regression": "mae", "classification": "wf1"}
"""Default selection metric per task. Regression: MAE, MMSA's own selection key (its validation
L1 loss), continuous and far less noisy on small validation splits than Acc2. Classification:
weighted F1, MERBench's headline score for IEMOCAP and MELD, robust to class imbalance."""

_PER_CLASS = re.compile(r"^f1_(\d+)$")


def metric_info(name: str) -> MetricInfo:
    """MetricInfo for a fixed name or a per-class "f1_<k>"; clear error for anything else."""
    if name in METRICS:
        return METRICS[name]
    match = _PER_CLASS.match(name)
    if match:
        return MetricInfo(name, "max", "classification", f"F1 (class {match.group(1)})")
    raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)} and f1_<class>")


def metric_direction(name: str) -> str:
    """"max" or "min" for a metric name."""
    return metric_info(name).direction


# ----------------------------------------------------------------------------- building blocks


def _as_1d(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: no samples to score")
    return arr


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Support-weighted F1 over the labels of y_true (labels only predicted carry zero weight)."""
    labels, support = np.unique(y_true, return_counts=True)
    f1 = _per_class_f1(y_true, y_pred, labels)
    return float(np.sum(f1 * support) / support.sum())


def _per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) per label; 0.0 when the label is in neither array (sklearn's default)."""
    out = np.zeros(len(labels), dtype=np.float64)
    for k, c in enumerate(labels):
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        denom = 2 * tp + fp + fn
        out[k] = 2 * tp / denom if denom > 0 else 0.0
    return out


def _binary_scores(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, weighted F1) of two boolean arrays; NaN for an empty selection."""
    if truth.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(truth == pred)), _weighted_f1(truth, pred)


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (no linear association to measure)."""
    a = np.asarray(y_true, dtype=np.float64) - np.mean(y_true)
    b = np.asarray(y_pred, dtype=np.float64) - np.mean(y_pred)
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if denom == 0.0 or not np.isfinite(denom):
        return 0.0
    return float(np.clip(np.sum(a * b) / denom, -1.0, 1.0))


# ----------------------------------------------------------------------------- task metrics


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """MMSA's MOSI/MOSEI regression metrics (thuiar/MMSA `MetricsTop.__eval_mosei_regression`).

    has0_acc2/has0_f1: truth >= 0 vs pred >= 0 on all samples. non0_acc2/non0_f1: truth > 0 vs
    pred > 0 on samples whose truth != 0 (NaN if every label is 0). acc5/acc7: both sides clipped
    to [-2, 2] / [-3, 3] and rounded with np.round (half to even, as MMSA). mae: mean |pred - truth|.
    corr: Pearson (0.0 for constant predictions or labels). F1 is support-weighted, (true, pred).
    """
    t = _as_1d(y_true, "y_true").astype(np.float64)
    p = _as_1d(y_pred, "y_pred").astype(np.float64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("regression labels and predictions must be finite (found NaN or inf)")
    has0_acc2, has0_f1 = _binary_scores(t >= 0, p >= 0)
    nonzero = t != 0
    non0_acc2, non0_f1 = _binary_scores(t[nonzero] > 0, p[nonzero] > 0)
    acc5 = float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(t, -2, 2))))
    acc7 = float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(t, -3, 3))))
    return {
        "has0_acc2": has0_acc2,
        "has0_f1": has0_f1,
        "non0_acc2": non0_acc2,
        "non0_f1": non0_f1,
        "acc5": acc5,
        "acc7": acc7,
        "mae": float(np.mean(np.abs(p - t))),
        "corr": pearson(t, p),
    }


def classification_metrics(y_true, y_pred_or_scores, num_classes: int) -> dict[str, float]:
    """war (accuracy), uar (mean recall over the classes present in y_true = balanced accuracy),
    wf1 (support-weighted F1) and f1_0 .. f1_{C-1} (0.0 for a class absent from truth and prediction).

    `y_pred_or_scores` is (N,) labels or (N, C) scores/logits (argmax taken).
    """
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    num_classes = int(num_classes)
    t = _as_1d(y_true, "y_true")
    pred = np.asarray(y_pred_or_scores.detach().cpu().numpy() if hasattr(y_pred_or_scores, "detach") else y_pred_or_scores)
    if pred.ndim == 2 and pred.shape[1] != 1:
        if pred.shape[1] != num_classes:
            raise ValueError(f"scores have {pred.shape[1]} columns but num_classes={num_classes}")
        pred = np.argmax(pred, axis=1)
    p = _as_1d(pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if not np.all(np.mod(arr, 1) == 0) or arr.min() < 0 or arr.max() >= num_classes:
            raise ValueError(f"{name} must hold integer class ids in [0, {num_classes}), got range [{arr.min()}, {arr.max()}]")
    t = t.astype(np.int64)
    p = p.astype(np.int64)
    present = np.unique(t)
    recalls = [np.mean(p[t == c] == c) for c in present]
    out = {
        "war": float(np.mean(t == p)),
        "uar": float(np.mean(recalls)),
        "wf1": _weighted_f1(t, p),
    }
    per_class = _per_class_f1(t, p, np.arange(num_classes))
    out.update({f"f1_{c}": float(per_class[c]) for c in range(num_classes)})
    return out


def compute_metrics(task: str, y_true, pred, num_classes: int | None = None) -> dict[str, float]:
    """Dispatch on task. Regression: pred (N,) or (N, 1). Classification: pred (N, C) scores (C is
    num_classes) or (N,) labels, with num_classes then given or inferred as max label + 1."""
    if task == "regression":
        return regression_metrics(y_true, pred)
    if task == "classification":
        arr = np.asarray(pred.detach().cpu().numpy() if hasattr(pred, "detach") else pred)
        if num_classes is None:
            if arr.ndim == 2 and arr.shape[1] > 1:
                num_classes = arr.shape[1]
            else:
                num_classes = max(int(np.max(y_true)), int(np.max(arr))) + 1
                num_classes = max(num_classes, 2)
        return classification_metrics(y_true, arr, num_classes)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# ----------------------------------------------------------------------------- robustness curves


def auilc(rates: Sequence[float], values: Sequence[float]) -> float:
    """Area under the (rate, metric) curve by the trapezoid rule divided by the rate span, so the
    result is on the metric's own scale (DQF's AUILC). Rates must be strictly increasing. A single
    point returns its value (the limit of the mean as the span shrinks). NaN values give NaN."""
    r = np.asarray(rates, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if r.ndim != 1 or r.shape != v.shape:
        raise ValueError(f"rates and values must be 1-D of equal length, got {r.shape} and {v.shape}")
    if r.size == 0:
        raise ValueError("auilc needs at least one (rate, value) point")
    if not np.isfinite(r).all():
        raise ValueError(f"rates must be finite, got {r.tolist()}")
    if r.size == 1:
        return float(v[0])
    if not np.all(np.diff(r) > 0):
        raise ValueError(f"rates must be sorted and unique, got {r.tolist()}")
    area = np.sum((r[1:] - r[:-1]) * (v[1:] + v[:-1]) / 2.0)
    return float(area / (r[-1] - r[0]))


_CURVE_COLUMNS = ("subset", "rate", "seed", "metric", "value")


def auilc_per_seed(df: "pd.DataFrame") -> "pd.DataFrame":
    """AUILC of every curve: one row per (grouping columns..., seed), with n_rates, rate_min, rate_max.

    The grouping columns are all columns except rate and value (subset, metric and e.g. study,
    trial, pattern, fill). Duplicate (curve, rate) rows raise; nothing is dropped silently.
    """
    import pandas as pd

    missing = [c for c in _CURVE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"curve table lacks columns {missing}; needs {list(_CURVE_COLUMNS)}")
    keys = [c for c in df.columns if c not in ("rate", "value")]
    dup = df.duplicated(subset=keys + ["rate"], keep=False)
    if dup.any():
        example = df.loc[dup, keys + ["rate"]].iloc[0].to_dict()
        raise ValueError(f"curve table has {int(dup.sum())} duplicate (curve, rate) rows, e.g. {example}")
    rows = []
    for key, curve in df.groupby(keys, sort=True, dropna=False):
        curve = curve.sort_values("rate")
        rates = curve["rate"].to_numpy(dtype=np.float64)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(
            auilc=auilc(rates, curve["value"].to_numpy(dtype=np.float64)),
            n_rates=len(rates), rate_min=float(rates[0]), rate_max=float(rates[-1]),
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=keys + ["auilc", "n_rates", "rate_min", "rate_max"])


def auilc_table(df: "pd.DataFrame") -> "pd.DataFrame":
    """AUILC per group (all columns but rate, value and seed): auilc_mean and auilc_std (ddof=1,
    NaN with one seed) over seeds, n_seeds, and the rate range used. A NaN in any seed's curve makes
    the group's mean NaN (no silent skipping). The full-set {t,a,v} curve has no rate-1.0 cell, so
    its span is 0.0..0.9 (as in DQF); `rate_min`/`rate_max` say so explicitly."""
    per_seed = auilc_per_seed(df)
    groups = [c for c in per_seed.columns if c not in ("seed", "auilc", "n_rates", "rate_min", "rate_max")]
    grouped = per_seed.groupby(groups, sort=True, dropna=False)
    out = grouped.agg(
        auilc_mean=("auilc", lambda s: s.mean(skipna=False)),
        auilc_std=("auilc", lambda s: s.std(ddof=1, skipna=False)),
        n_seeds=("seed", "nunique"),
        n_rates=("n_rates", "min"),
        rate_min=("rate_min", "min"),
        rate_max=("rate_max", "max"),
    )
    return out.reset_index()


def pareto_front(values, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `values` (n, k); `modes[j]` is "max" or "min" for
    column j. Row i is dominated when another row is at least as good in every column and strictly
    better in one. The one copy of the rule: study selection and the dashboard both use it."""
    values = np.asarray(values, dtype=float).reshape(len(values), -1)
    if any(m not in ("max", "min") for m in modes) or len(modes) != values.shape[1]:
        raise ValueError(f"pareto_front: need one mode ('max'/'min') per column, got {list(modes)}")
    signed = np.where(np.array(modes) == "max", values, -values)  # larger is better in every column
    keep = np.ones(len(signed), dtype=bool)
    for i in range(len(signed)):
        at_least = np.all(signed >= signed[i], axis=1)
        better = np.any(signed > signed[i], axis=1)
        keep[i] = not np.any(at_least & better)
    return keep
