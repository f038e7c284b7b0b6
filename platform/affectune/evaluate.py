"""Robustness evaluation of a trained model on the missing-modality test grid.

    result = robustness(model, dataset)            # test split, seeds 0,1,2, random, zero fill
    print(format_auilc_table(result.summary))

For every (seed, pattern) the per-frame uniforms are drawn once per modality (masks are a pure
function of seed, sample id, modality and pattern, see `affectune.missing`), and every (subset,
rate) cell thresholds them, so the masks are nested across rates and identical for every method.
Each distinct input is forwarded once over the whole split in large batches under
`torch.inference_mode`: rate 0 of every subset is the complete input, and with zero fill a rate
of 1.0 drops whole modalities whatever the seed, which is exactly an inter-modality condition;
those inputs are computed once and their metrics reused. So the grid costs its distinct forward
passes plus cheap mask thresholding (`make bench` measures the ratio).

Inter-modality conditions (UMDF's tables) are rows with condition="inter", subset = the label of
the AVAILABLE modalities and rate NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from affectune import MODALITIES
from affectune.data.schema import Dataset
from affectune.loader import TensorSplit, masked_copy, preload
from affectune.metrics import PRIMARY_METRIC, auilc_table, metric_info
from affectune.missing import (
    FILLS, FULL_SET, INTER_CONDITIONS, PATTERNS, RATES, SUBSET_ORDER, SUBSETS, format_subset, frame_mask,
    frame_uniforms, subset_label, test_grid,
)
from affectune.train import predict_split, score

CURVE_COLUMNS = ("split", "condition", "subset", "rate", "seed", "pattern", "fill", "metric", "value")
SUMMARY_COLUMNS = ("split", "subset", "pattern", "fill", "metric", "auilc", "auilc_std", "n_seeds",
                   "rate_min", "rate_max")

DEFAULT_TABLE_METRICS = {
    "regression": ("acc7", "non0_acc2", "non0_f1", "mae", "corr"),
    "classification": ("war", "uar", "wf1"),
}


@dataclass
class RobustnessResult:
    """The grid's curves (one row per cell, seed and metric) and AUILC per subset."""

    curves: pd.DataFrame
    """Columns CURVE_COLUMNS; condition "intra" (subset, rate) or "inter" (available subset, rate NaN)."""
    summary: pd.DataFrame
    """Columns SUMMARY_COLUMNS: AUILC of each intra curve, mean and std (ddof=1) over seeds."""
    complete: dict[str, float]
    """Metrics on the complete inputs (every rate-0 cell has these values)."""
    forward_passes: int
    """Distinct inputs forwarded over the whole split (the grid's unavoidable work)."""
    task: str = "regression"
    """Dataset task."""
    meta: dict = field(default_factory=dict)
    """Split size and the grid's arguments, for lineage."""
    predictions: dict = field(default_factory=dict)
    """With keep_predictions: (condition, subset label, rate) -> (N, k) numpy predictions of the first
    (seed, pattern, fill), rate None for inter conditions (per-sample statistics, e.g. a bootstrap)."""
    labels: np.ndarray | None = None
    """With keep_predictions: the split's labels (N,), in the predictions' row order."""


def _model_device(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_choices(values: Sequence[str], allowed: Sequence[str], what: str) -> tuple[str, ...]:
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{what} must be a non-empty selection of {tuple(allowed)}, got {values}")
    return values


def robustness(
    model,
    dataset: Dataset,
    split: str = "test",
    seeds: Sequence[int] = (0, 1, 2),
    patterns: Sequence[str] = ("random",),
    fills: Sequence[str] = ("zero",),
    subsets: Sequence[frozenset[str]] = SUBSETS,
    rates: Sequence[float] = RATES,
    include_inter: bool = True,
    batch_size: int = 1024,
    keep_predictions: bool = False,
) -> RobustnessResult:
    """Evaluate `model` on the grid of `dataset.splits[split]`; see the module docstring."""
    if split not in dataset.splits:
        raise ValueError(f"dataset {dataset.source!r} has no split {split!r} (have {sorted(dataset.splits)})")
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct ints, got {seeds}")
    patterns = _check_choices(patterns, PATTERNS, "patterns")
    fills = _check_choices(fills, FILLS, "fills")
    cells = test_grid(subsets, rates)
    task = dataset.task
    num_classes = dataset.num_classes

    model.eval()
    data = preload(dataset, split, _model_device(model))
    n_frames = {m: data.features[m].shape[1] for m in MODALITIES}
    cache: dict[tuple, dict[str, float]] = {}
    kept: dict[tuple, np.ndarray] = {}  # input key -> predictions, with keep_predictions
    cells_kept: dict[tuple, tuple] = {}  # (condition, label, rate) -> input key, first seed/pattern/fill

    def metrics_of(key: tuple, make_dropped, fill: str, seed: int) -> dict[str, float]:
        """Metrics of one distinct input, computed on first use. Modalities whose mask key is "all"
        are absent as a whole, which the batch's `available` flags say (frame masks stay hidden)."""
        if key not in cache:
            dropped = make_dropped()
            absent = tuple(m for m, k in zip(MODALITIES, key[-1]) if k == "all") if key != ("complete",) else ()
            inputs = masked_copy(data, dropped, fill=fill, seed=seed, absent=absent) if dropped else data
            pred = predict_split(model, inputs, batch_size)
            cache[key] = score(task, data, pred, num_classes)
            if keep_predictions:
                kept[key] = pred.numpy()
        return cache[key]

    def input_key(mask_keys: tuple, fill: str, seed: int) -> tuple:
        """Identity of an input: which frames are dropped (per modality) and how they are filled."""
        if all(k is None for k in mask_keys):
            return ("complete",)
        return (fill, seed if fill == "gaussian" else None, mask_keys)

    rows: list[tuple] = []

    def emit(condition: str, label: str, rate: float, seed: int, pattern: str, fill: str, values: dict,
             key: tuple):
        if keep_predictions and (seed, pattern, fill) == (seeds[0], patterns[0], fills[0]):
            cells_kept[(condition, label, None if condition == "inter" else rate)] = key
        rows.extend((split, condition, label, rate, seed, pattern, fill, k, float(v)) for k, v in values.items())

    whole = {m: data.valid[m] for m in MODALITIES}  # (N, T_m): dropping every frame of m
    for seed in seeds:
        for pattern in patterns:
            uniforms = {m: frame_uniforms(data.ids, n_frames[m], m, seed=seed, pattern=pattern) for m in MODALITIES}

            def cell_dropped(subset, rate, uniforms=uniforms, pattern=pattern, seed=seed):
                def make():
                    return {m: whole[m] if rate == 1.0 else torch.from_numpy(frame_mask(
                        data.ids, data.lengths[m], n_frames[m], m, rate, seed=seed, pattern=pattern,
                        uniforms=uniforms[m])).to(data.device) for m in sorted(subset)}
                return make

            for fill in fills:
                for subset, rate in cells:
                    # rate 1.0 drops every frame for both patterns ("all"): seed- and pattern-free.
                    mask_keys = tuple(None if (m not in subset or rate == 0.0) else
                                      ("all" if rate == 1.0 else (seed, pattern, rate)) for m in MODALITIES)
                    key = input_key(mask_keys, fill, seed)
                    values = metrics_of(key, cell_dropped(subset, rate), fill, seed)
                    emit("intra", subset_label(subset), rate, seed, pattern, fill, values, key)
                if include_inter:
                    for available in INTER_CONDITIONS:
                        absent = FULL_SET - available
                        mask_keys = tuple("all" if m in absent else None for m in MODALITIES)
                        key = input_key(mask_keys, fill, seed)
                        values = metrics_of(key, lambda absent=absent: {m: whole[m] for m in sorted(absent)},
                                            fill, seed)
                        emit("inter", subset_label(available), math.nan, seed, pattern, fill, values, key)

    curves = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    complete_key = ("complete",)
    if complete_key not in cache:  # a grid without rate 0: still report the complete-input metrics
        metrics_of(complete_key, dict, fills[0], seeds[0])
    return RobustnessResult(
        curves=curves, summary=summarize(curves), complete=dict(cache[complete_key]),
        forward_passes=len(cache), task=task,
        meta={"split": split, "n_samples": len(data), "seeds": list(seeds), "patterns": list(patterns),
              "fills": list(fills), "rates": [float(r) for r in rates],
              "subsets": [subset_label(s) for s in subsets], "include_inter": include_inter},
        predictions={cell: kept[key] for cell, key in cells_kept.items()},
        labels=data.label.cpu().numpy() if keep_predictions else None,
    )


def summarize(curves: pd.DataFrame) -> pd.DataFrame:
    """AUILC per (split, subset, pattern, fill, metric) of the intra curves, mean/std over seeds."""
    intra = curves[curves["condition"] == "intra"]
    if intra.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    table = auilc_table(intra[["split", "subset", "pattern", "fill", "metric", "rate", "seed", "value"]])
    table = table.rename(columns={"auilc_mean": "auilc"})[list(SUMMARY_COLUMNS)]
    orders = {"subset": SUBSET_ORDER, "pattern": PATTERNS, "fill": FILLS}
    rank = lambda c: c.map({v: k for k, v in enumerate(orders[c.name])}).fillna(99) if c.name in orders else c  # noqa: E731
    table = table.sort_values(["split", "pattern", "fill", "subset", "metric"], key=rank, kind="stable")
    return table.reset_index(drop=True)


def _format_value(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.4f}" if not math.isfinite(std) else f"{mean:.4f}±{std:.4f}"


def format_auilc_table(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> str:
    """A printable AUILC table: rows subsets in DQF order, columns metrics, one block per
    (split, pattern, fill); cells "mean±std" over seeds (just the mean with one seed)."""
    if summary.empty:
        return "(no AUILC rows)"
    present = list(dict.fromkeys(summary["metric"]))
    if metrics is None:
        task = metric_info(present[0]).task
        metrics = [m for m in DEFAULT_TABLE_METRICS[task] if m in present] or present
    missing = [m for m in metrics if m not in present]
    if missing:
        raise ValueError(f"metrics {missing} are not in the summary (have {present})")
    blocks = []
    for (split, pattern, fill), part in summary.groupby(["split", "pattern", "fill"], sort=False):
        n_seeds = int(part["n_seeds"].max())
        header = ["subset"] + [metric_info(m).label + (" ↓" if metric_info(m).direction == "min" else "")
                               for m in metrics]
        body = []
        for label in [s for s in SUBSET_ORDER if s in set(part["subset"])]:
            row = part[part["subset"] == label].set_index("metric")
            body.append([format_subset(label)] + [_format_value(row.at[m, "auilc"], row.at[m, "auilc_std"])
                                                          for m in metrics])
        widths = [max(len(r[k]) for r in [header] + body) for k in range(len(header))]
        lines = [f"AUILC on {split} (pattern={pattern}, fill={fill}, seeds={n_seeds})",
                 "  ".join(h.ljust(w) for h, w in zip(header, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def primary_auilc(summary: pd.DataFrame, subset: str = "tav", metric: str | None = None,
                  pattern: str = "random", fill: str = "zero") -> float:
    """One AUILC value (default: the task's primary metric on {t,a,v}, random pattern, zero fill)."""
    if metric is None:
        metric = PRIMARY_METRIC[metric_info(summary["metric"].iloc[0]).task]
    row = summary[(summary["subset"] == subset) & (summary["metric"] == metric)
                  & (summary["pattern"] == pattern) & (summary["fill"] == fill)]
    if row.empty:
        raise KeyError(f"no AUILC row for subset={subset!r}, metric={metric!r}, pattern={pattern!r}, fill={fill!r}")
    return float(row["auilc"].iloc[0])
