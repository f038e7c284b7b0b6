"""Pure view logic of the dashboard: store snapshot, tables (DataFrames) and Plotly figures.

Nothing here imports Streamlit, so every table and figure is testable on its own; `app.py` only
lays them out. The dashboard reads the study store through `affectune.store` and never writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from affectune.metrics import METRICS, PRIMARY_METRIC, metric_direction, metric_info, pareto_front
from affectune.missing import CONDITION_ORDER, SUBSET_ORDER, format_subset
from affectune.store import TRIAL_STATUSES, open_store

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = REPO_ROOT / "results"
"""The store `make demo` writes (affectune.studies.cli defaults --storage to results/ under the repo)."""

STORE_ENV = "AFFECTUNE_STORE"
STORE_TABLES = ("studies", "trials", "curves", "summary")
"""The store's table directories under its root."""

def subset_display(label: str) -> str:
    """Store label ("ta") -> set notation ("{t,a}") by `affectune.missing.format_subset`; a label
    that is not a subset (a foreign store) is shown as it is."""
    try:
        return format_subset(label)
    except ValueError:
        return str(label)


def metric_label(name: str) -> str:
    """Display label of a metric ("mae" -> "MAE"); unknown names are shown as they are."""
    try:
        return metric_info(name).label
    except KeyError:
        return name


def direction_of(name: str) -> str:
    """"max" or "min" for a metric (unknown metrics: "max"), accepting val_/valmask_ prefixes."""
    for prefix in ("", "val_", "valmask_", "best_"):
        if name.startswith(prefix):
            try:
                return metric_direction(name[len(prefix):])
            except KeyError:
                continue
    return "max"


# ----------------------------------------------------------------------------- store access


def resolve_store_root(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """`--store DIR` from the script arguments, else $AFFECTUNE_STORE, else the demo's store."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store", default=None)
    known, _ = parser.parse_known_args(list(argv))
    return known.store or environ.get(STORE_ENV) or str(DEFAULT_STORE)


def change_token(root: str) -> str:
    """Cheap fingerprint of the store's files (names, sizes, mtimes) to key the read cache.

    Object stores (``s3://``) are not listed: the token changes once a minute instead.
    """
    if "://" in root:
        import time

        return f"t{int(time.time() // 60)}"
    digest = hashlib.blake2b(digest_size=16)
    base = Path(root).expanduser()
    if not base.exists():
        return "missing"
    # only the store's tables: a study's Ray storage (checkpoints, logs) may live under the same root
    for dirpath, dirnames, filenames in (entry for table in STORE_TABLES for entry in os.walk(base / table)):
        dirnames.sort()
        for name in sorted(filenames):
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:  # a temp file renamed away while listing
                continue
            digest.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class StoreSnapshot:
    """Everything the dashboard shows, read once from one store root."""

    root: str
    """The store root as given."""
    studies: pd.DataFrame
    """StudyStore.studies()."""
    trials: pd.DataFrame
    """StudyStore.trials()."""
    curves: pd.DataFrame
    """StudyStore.curves()."""
    summary: pd.DataFrame
    """StudyStore.summary()."""
    problems: tuple[tuple[str, str], ...] = field(default=())
    """(path, message) for every file the store skipped, plus dashboard-level inconsistencies."""
    exists: bool = True
    """False when a local root does not exist at all."""
    token: str = ""
    """The change token the snapshot was read under (keys derived caches)."""

    @property
    def is_empty(self) -> bool:
        return self.studies.empty and self.trials.empty and self.curves.empty and self.summary.empty

    def study_names(self) -> list[str]:
        """Every study that has a study record or any trial, sorted."""
        names = set(self.studies["study"].dropna().astype(str)) | set(self.trials["study"].dropna().astype(str))
        return sorted(names)


def load_snapshot(root: str, token: str = "") -> StoreSnapshot:
    """Read the four tables of the store at `root` (read-only); `token` is recorded as given."""
    exists = "://" in root or Path(root).expanduser().exists()
    store = open_store(root)
    studies, trials, curves, summary = store.studies(), store.trials(), store.curves(), store.summary()
    problems = list(store.problems)
    known = set(studies["study"].dropna().astype(str))
    for name in sorted(set(trials["study"].dropna().astype(str)) - known):
        problems.append((f"{root}/studies/study={name}",
                         f"study {name!r} has trials but no readable study record; "
                         "method and dataset are taken from its trials"))
    return StoreSnapshot(root=root, studies=studies, trials=trials, curves=curves, summary=summary,
                         problems=tuple(problems), exists=exists, token=token)


def _json_loads(text: Any, default: Any) -> Any:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return default
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


# ----------------------------------------------------------------------------- studies overview


def study_info(snap: StoreSnapshot) -> pd.DataFrame:
    """study, method, dataset, fingerprint, objective (list of {metric, mode}) for every study."""
    rows = []
    by_name = {r["study"]: r for r in snap.studies.to_dict("records")}
    trials = snap.trials
    for name in snap.study_names():
        rec = by_name.get(name)
        if rec is None:  # partial store: fall back to the trials' lineage
            first = trials[trials["study"] == name].iloc[0]
            rec = {"method": first["method"], "dataset": first["dataset"],
                   "fingerprint": first["fingerprint"], "objective": None, "created": pd.NaT}
        objective = _json_loads(rec.get("objective"), [])
        if isinstance(objective, dict):
            objective = [objective]
        rows.append({"study": name, "method": rec.get("method"), "dataset": rec.get("dataset"),
                     "fingerprint": rec.get("fingerprint"), "objective": objective,
                     "created": rec.get("created")})
    return pd.DataFrame(rows, columns=["study", "method", "dataset", "fingerprint", "objective", "created"])


def dataset_key(dataset: Any, fingerprint: Any) -> str:
    """One label per distinct dataset content: name plus the fingerprint's first 8 characters."""
    return f"{dataset} [{str(fingerprint)[:8]}]"


def objective_columns(trials: pd.DataFrame, objective: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    """(trial column, mode) for each objective of a study, resolved against the trial columns.

    The study runner records each objective's value at the trial's best epoch as `best_<metric>` (what
    selection and Optuna use), so that column is preferred; then the metric's own column ("val_mae"),
    then "val_<metric>" for a bare name. Without a declared objective, the column "objective" is used.
    """
    out = []
    for k, spec in enumerate(objective or []):
        metric = str(spec.get("metric", ""))
        mode = str(spec.get("mode") or direction_of(metric))
        for candidate in (f"best_{metric}", metric, f"best_val_{metric}", f"val_{metric}",
                          "objective" if k == 0 else None):
            if candidate and candidate in trials.columns:
                out.append((candidate, mode))
                break
    if not out and "objective" in trials.columns:
        out.append(("objective", "max"))
    return out


def _best(values: pd.Series, mode: str) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return float("nan")
    return float(values.min() if mode == "min" else values.max())


def studies_overview(snap: StoreSnapshot) -> pd.DataFrame:
    """One row per study: lineage, trial counts by status, best validation score, wall time."""
    info = study_info(snap)
    rows = []
    for rec in info.to_dict("records"):
        trials = snap.trials[snap.trials["study"] == rec["study"]]
        counts = trials["status"].value_counts()
        objectives = objective_columns(trials, rec["objective"])
        usable = trials[trials["status"] != "failed"]
        if objectives:
            column, mode = objectives[0]
            best = _best(usable[column], mode) if column in usable else float("nan")
            objective = f"{column} ({mode})"
        else:
            best, objective = float("nan"), ""
        wall = pd.to_numeric(trials["wall_time_s"], errors="coerce")
        rows.append({
            "study": rec["study"], "method": rec["method"], "dataset": rec["dataset"],
            "fingerprint": rec["fingerprint"], "trials": int(len(trials)),
            **{status: int(counts.get(status, 0)) for status in TRIAL_STATUSES},
            "objective": objective, "best_validation": best,
            "wall_time_s": float(wall.sum()) if wall.notna().any() else float("nan"),
            "created": rec["created"],
        })
    columns = ["study", "method", "dataset", "fingerprint", "trials", *TRIAL_STATUSES, "objective",
               "best_validation", "wall_time_s", "created"]
    return pd.DataFrame(rows, columns=columns)


def failed_only_messages(overview: pd.DataFrame, snap: StoreSnapshot) -> list[str]:
    """A message for every study whose trials all failed (or that has no trials), with the first error."""
    messages = []
    for rec in overview.to_dict("records"):
        if rec["trials"] == 0:
            messages.append(f"Study {rec['study']!r} has no trials yet "
                            f"({snap.root}/trials/study={rec['study']}).")
        elif rec["failed"] == rec["trials"]:
            errors = snap.trials.loc[(snap.trials["study"] == rec["study"]), "error"].dropna()
            first = str(errors.iloc[0]).strip().splitlines()[-1] if len(errors) else "no error recorded"
            messages.append(f"Study {rec['study']!r} has only failed trials ({rec['failed']}); "
                            f"first error: {first} ({snap.root}/trials/study={rec['study']}).")
    return messages


# ----------------------------------------------------------------------------- robustness curves


def evaluated_rows(frame: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Rows of a curves/summary frame that belong to each study's selected trials.

    A study whose curves come from trials flagged `selected` shows only those; a study with no
    selected trial among its evaluated ones shows all of them.
    """
    if frame.empty or trials.empty:
        return frame
    selected = trials.loc[trials["selected"].fillna(False).astype(bool), ["study", "trial_id"]]
    keys = set(zip(selected["study"], selected["trial_id"]))
    is_selected = pd.Series([(s, t) in keys for s, t in zip(frame["study"], frame["trial_id"])],
                            index=frame.index)
    has_selected = frame.loc[is_selected, "study"].unique()
    keep = is_selected | ~frame["study"].isin(has_selected)
    return frame[keep]


def order_metrics(names) -> list[str]:
    """Metrics in affectune.metrics order with each task's primary metric (MAE, WF1) first."""
    known = list(METRICS)
    primary = [m for m in PRIMARY_METRIC.values() if m in names]
    rest = sorted((m for m in names if m not in primary), key=lambda m: (known.index(m) if m in known else len(known), m))
    return primary + rest


def curve_choices(curves: pd.DataFrame, condition: str = "intra") -> dict[str, list]:
    """Values present in the store for each curve selector (split, metric, pattern, fill, subset)."""
    frame = curves[curves["condition"] == condition] if "condition" in curves else curves
    out: dict[str, list] = {}
    for column in ("split", "metric", "pattern", "fill"):
        out[column] = sorted(frame[column].dropna().astype(str).unique()) if column in frame else []
    present = set(frame["subset"].dropna().astype(str)) if "subset" in frame else set()
    order = SUBSET_ORDER if condition == "intra" else CONDITION_ORDER
    out["subset"] = [s for s in order if s in present] + sorted(present - set(order))
    out["metric"] = order_metrics(out["metric"])
    if "test" in out["split"]:  # the test split first: it is what the papers report
        out["split"].remove("test")
        out["split"].insert(0, "test")
    return out


def curve_study_options(snap: StoreSnapshot) -> tuple[list[str], list[str], dict[str, str]]:
    """(studies with curves, the default choice, a display label per study).

    The default is every study of the dataset (name + fingerprint) with the most studies.
    """
    with_curves = sorted(set(snap.curves["study"].dropna().astype(str))) if not snap.curves.empty else []
    if not with_curves:
        return [], [], {}
    info = study_info(snap)
    info = info[info["study"].isin(with_curves)]
    info = info.assign(dataset_key=[dataset_key(d, f) for d, f in zip(info["dataset"], info["fingerprint"])])
    largest = info["dataset_key"].value_counts().index[0]
    default = info.loc[info["dataset_key"] == largest, "study"].tolist()
    labels = {r["study"]: f"{r['study']} · {r['method']} · {r['dataset_key']}" for r in info.to_dict("records")}
    return with_curves, default, labels


def preferred(options: Sequence, value: Any) -> int:
    """Index of the platform default (random pattern, zero fill, test split) among the options."""
    options = list(options)
    return options.index(value) if value in options else 0


def default_curve_selection(choices: Mapping[str, list]) -> dict[str, Any]:
    """The robustness page's initial selectors: test split, primary metric, random pattern, zero
    fill, the all-modalities subset (the last in DQF order)."""
    pick = {name: (choices[name][preferred(choices[name], value)] if choices[name] else None)
            for name, value in (("split", "test"), ("metric", None), ("pattern", "random"), ("fill", "zero"))}
    pick["subset"] = choices["subset"][-1] if choices["subset"] else None
    return pick


def subset_curves_title(metric: str, subset: str, pattern: str, fill: str) -> str:
    direction = "lower is better" if direction_of(metric) == "min" else "higher is better"
    return (f"{metric_label(metric)} vs missing rate, missing {subset_display(subset)} "
            f"({pattern}, {fill}; {direction})")


def aggregate_curves(curves: pd.DataFrame, trials: pd.DataFrame, studies: Sequence[str], *, metric: str,
                     pattern: str, fill: str, split: str = "test",
                     subsets: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and std over seeds (train and mask seeds) per study, subset and rate (intra condition).

    A study with several evaluated (selected) trials, e.g. top-k or a Pareto set, gets one line per
    trial: different configs are never averaged together. Columns: study, trial_id, label (the
    study, or study/trial when it has several), method, dataset, fingerprint, dataset_key, subset,
    rate, mean, std, n.
    """
    frame = curves[(curves["study"].isin(list(studies))) & (curves["condition"] == "intra")
                   & (curves["metric"] == metric) & (curves["pattern"] == pattern)
                   & (curves["fill"] == fill) & (curves["split"] == split)]
    if subsets is not None:
        frame = frame[frame["subset"].isin(list(subsets))]
    frame = evaluated_rows(frame, trials)
    columns = ["study", "trial_id", "label", "method", "dataset", "fingerprint", "dataset_key", "subset", "rate",
               "mean", "std", "n"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    grouped = (frame.assign(value=pd.to_numeric(frame["value"], errors="coerce"))
               .groupby(["study", "trial_id", "method", "dataset", "fingerprint", "subset", "rate"], sort=True)
               ["value"].agg(mean="mean", std="std", n="count").reset_index())
    grouped["std"] = grouped["std"].fillna(0.0)  # one seed: no spread to show
    grouped["label"] = entry_labels(grouped)
    grouped["dataset_key"] = [dataset_key(d, f) for d, f in zip(grouped["dataset"], grouped["fingerprint"])]
    return grouped[columns]


def entry_labels(frame: pd.DataFrame) -> list[str]:
    """The study name, or "study/trial_id" for studies with several evaluated trials in `frame`."""
    per_study = frame.groupby("study")["trial_id"].nunique()
    return [s if per_study[s] == 1 else f"{s}/{t}" for s, t in zip(frame["study"], frame["trial_id"])]


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _study_colors(studies: Sequence[str]) -> dict[str, str]:
    return {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(sorted(studies))}


def _add_study_traces(fig: go.Figure, part: pd.DataFrame, color: str, label: str, show_legend: bool,
                      row: int | None = None, col: int | None = None) -> None:
    """A mean line and a closed mean ± std band (one polygon) for one study on one panel."""
    part = part.sort_values("rate")
    x = part["rate"].to_numpy(float)
    mean, std = part["mean"].to_numpy(float), part["std"].to_numpy(float)
    kw = {} if row is None else {"row": row, "col": col}
    fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                             fill="toself", fillcolor=_rgba(color, 0.18), line={"width": 0}, mode="lines",
                             hoverinfo="skip", showlegend=False, legendgroup=label, name=f"{label} ± std",
                             meta="band"), **kw)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", line={"color": color, "width": 2},
                             marker={"size": 5}, name=label, legendgroup=label, showlegend=show_legend,
                             meta="mean", customdata=np.stack([std, part["n"].to_numpy(float)], axis=-1),
                             hovertemplate="rate %{x:.1f}<br>%{y:.4f} ± %{customdata[0]:.4f}"
                                           " (n=%{customdata[1]})<extra>" + label + "</extra>"), **kw)


def _study_label(rec: Mapping[str, Any]) -> str:
    return f"{rec['label']} ({rec['method']})"


def curves_figure(agg: pd.DataFrame, metric: str, title: str = "") -> go.Figure:
    """Metric vs missing rate, one line (mean) and band (± std over seeds) per study.

    Studies on different datasets (fingerprints) are drawn in separate panels, one per dataset.
    """
    keys = sorted(agg["dataset_key"].unique()) if not agg.empty else []
    fig = make_subplots(rows=1, cols=max(len(keys), 1), subplot_titles=keys or None, shared_yaxes=False)
    colors = _study_colors(agg["label"].unique() if not agg.empty else [])
    for c, key in enumerate(keys, start=1):
        part = agg[agg["dataset_key"] == key]
        for label, sub in part.groupby("label", sort=True):
            _add_study_traces(fig, sub, colors[label], _study_label(sub.iloc[0]), True, row=1, col=c)
    fig.update_xaxes(title_text="missing rate", range=[-0.02, 1.02], dtick=0.1)
    fig.update_yaxes(title_text=metric_label(metric), col=1)
    fig.update_layout(title=title or f"{metric_label(metric)} vs missing rate", template="plotly_white",
                      legend={"orientation": "h", "y": -0.2}, height=460, margin={"t": 70})
    return fig


def small_multiples_figure(agg: pd.DataFrame, metric: str) -> go.Figure:
    """All 7 missing subsets at once: one panel per subset (columns), one row per dataset."""
    keys = sorted(agg["dataset_key"].unique()) if not agg.empty else [""]
    subsets = [s for s in SUBSET_ORDER if s in set(agg["subset"])] or list(SUBSET_ORDER)
    titles = [f"{key} {subset_display(s)}".strip() for key in keys for s in subsets]
    fig = make_subplots(rows=len(keys), cols=len(subsets), subplot_titles=titles, shared_yaxes="rows",
                        horizontal_spacing=0.02, vertical_spacing=0.12)
    colors = _study_colors(agg["label"].unique() if not agg.empty else [])
    shown: set[str] = set()
    for r, key in enumerate(keys, start=1):
        for c, subset in enumerate(subsets, start=1):
            part = agg[(agg["dataset_key"] == key) & (agg["subset"] == subset)]
            for entry, sub in part.groupby("label", sort=True):
                label = _study_label(sub.iloc[0])
                _add_study_traces(fig, sub, colors[entry], label, label not in shown, row=r, col=c)
                shown.add(label)
    fig.update_xaxes(range=[-0.02, 1.02], dtick=0.5)
    fig.update_yaxes(title_text=metric_label(metric), col=1)
    fig.update_layout(title=f"{metric_label(metric)} vs missing rate, every subset", template="plotly_white",
                      height=300 * len(keys) + 120, legend={"orientation": "h", "y": -0.15})
    return fig


# ----------------------------------------------------------------------------- AUILC tables


ID_COLUMNS = ("dataset", "study", "trial_id", "method")
"""The identifying (non-value) columns of the AUILC table."""


def auilc_table(summary: pd.DataFrame, trials: pd.DataFrame, studies: Sequence[str], *, metric: str,
                pattern: str, fill: str, split: str = "test") -> pd.DataFrame:
    """DQF Table 2 layout: one row per study, AUILC per missing subset ({v} ... {v,a,t}) and their mean.

    Columns: dataset, study, trial_id, method, then the subsets in DQF order (display labels), then
    "avg". A study with several evaluated trials (top-k, Pareto set) gets one row per trial.
    """
    frame = summary[summary["study"].isin(list(studies)) & (summary["metric"] == metric)
                    & (summary["pattern"] == pattern) & (summary["fill"] == fill) & (summary["split"] == split)]
    frame = evaluated_rows(frame, trials)
    subsets = [s for s in SUBSET_ORDER if s in set(frame["subset"])]
    base = ["dataset", "study", "trial_id", "method"]
    if frame.empty:
        return pd.DataFrame(columns=base + [subset_display(s) for s in SUBSET_ORDER] + ["avg"])
    frame = frame.assign(auilc=pd.to_numeric(frame["auilc"], errors="coerce"),
                         dataset=[dataset_key(d, f) for d, f in zip(frame["dataset"], frame["fingerprint"])])
    wide = frame.pivot_table(index=base, columns="subset", values="auilc", aggfunc="mean")
    wide = wide[subsets]
    wide.columns = [subset_display(s) for s in subsets]
    wide["avg"] = wide.mean(axis=1)
    return wide.reset_index().sort_values(["dataset", "study"], ignore_index=True)


def best_cells(table: pd.DataFrame, value_columns: Sequence[str], direction: str,
               group_column: str = "dataset") -> set[tuple[int, str]]:
    """(row index, column) of the best value per column within each dataset group.

    Ties are all marked. `direction` is "max" or "min" (MAE: lower is better).
    """
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
    best: set[tuple[int, str]] = set()
    groups = table.groupby(group_column, sort=False) if group_column in table else [(None, table)]
    for _, part in groups:
        for column in value_columns:
            values = pd.to_numeric(part[column], errors="coerce")
            if values.notna().sum() == 0:
                continue
            target = values.min() if direction == "min" else values.max()
            best.update((int(i), column) for i in values.index[np.isclose(values, target)])
    return best


def style_best(table: pd.DataFrame, value_columns: Sequence[str], direction: str):
    """A pandas Styler: 4 decimals, best per column (per dataset) bold on a green background."""
    marks = best_cells(table, value_columns, direction)

    def _css(frame: pd.DataFrame) -> pd.DataFrame:
        css = pd.DataFrame("", index=frame.index, columns=frame.columns)
        for i, column in marks:
            css.loc[i, column] = "font-weight: bold; background-color: #c7e9c0"
        return css

    return table.style.apply(_css, axis=None).format("{:.4f}", subset=list(value_columns), na_rep="—")


def auilc_heatmap(table: pd.DataFrame, metric: str) -> go.Figure:
    """Studies x subsets heatmap of AUILC; the colour scale is reversed when lower is better."""
    value_columns = [c for c in table.columns if c not in ID_COLUMNS]
    labels = [f"{s} ({m}) · {d}" for s, m, d in zip(entry_labels(table), table["method"], table["dataset"])]
    z = table[value_columns].to_numpy(float)
    fig = go.Figure(go.Heatmap(z=z, x=value_columns, y=labels, colorscale="Viridis",
                               reversescale=direction_of(metric) == "min",
                               text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.3f}")(z) if z.size else None,
                               texttemplate="%{text}", colorbar={"title": {"text": "AUILC"}}))
    better = "lower is better" if direction_of(metric) == "min" else "higher is better"
    # The row labels are long ("study (method) · dataset"): a left margin that holds the longest.
    fig.update_layout(title=f"AUILC of {metric_label(metric)} ({better})", template="plotly_white",
                      height=160 + 40 * max(len(labels), 1), margin={"l": text_width(labels) + 20, "r": 20},
                      yaxis={"autorange": "reversed", "automargin": True}, xaxis={"automargin": True})
    return fig


def text_width(texts: Sequence[str], px_per_char: float = 7.5) -> int:
    """Pixels the longest of `texts` takes at plotly's default 12 px font (a generous estimate)."""
    return int(max((len(str(t)) for t in texts), default=0) * px_per_char)


def inter_table(curves: pd.DataFrame, trials: pd.DataFrame, studies: Sequence[str], *, metrics: Sequence[str],
                fill: str, split: str = "test") -> pd.DataFrame:
    """UMDF Table 1 layout: rows = available modalities ({t} ... {t,a,v}), columns = "study · metric".

    Values are means over seeds of the inter-modality condition rows.
    """
    frame = curves[curves["study"].isin(list(studies)) & (curves["condition"] == "inter")
                   & curves["metric"].isin(list(metrics)) & (curves["fill"] == fill) & (curves["split"] == split)]
    frame = evaluated_rows(frame, trials)
    if frame.empty:
        return pd.DataFrame(columns=["available"])
    frame = frame.assign(value=pd.to_numeric(frame["value"], errors="coerce"))
    frame = frame.assign(entry=entry_labels(frame))
    frame = frame.assign(column=[f"{e} · {metric_label(m)}" for e, m in zip(frame["entry"], frame["metric"])])
    wide = frame.pivot_table(index="subset", columns="column", values="value", aggfunc="mean")
    order = [s for s in CONDITION_ORDER if s in wide.index] + sorted(set(wide.index) - set(CONDITION_ORDER))
    ordered_columns = [f"{s} · {metric_label(m)}" for s in sorted(set(frame["entry"])) for m in metrics
                       if f"{s} · {metric_label(m)}" in wide.columns]
    wide = wide.loc[order, ordered_columns]
    wide.index = [subset_display(s) for s in wide.index]
    wide.index.name = "available"
    return wide.reset_index()


# ----------------------------------------------------------------------------- trial explorer


def trial_frame(trials: pd.DataFrame, study: str) -> pd.DataFrame:
    """One study's trials with the searched params expanded into `param:<name>` columns."""
    part = trials[trials["study"] == study].copy().sort_values("trial_id", ignore_index=True)
    params = [_json_loads(p, {}) or {} for p in part["params"]]
    expanded = pd.DataFrame(params, index=part.index)
    expanded.columns = [f"param:{c}" for c in expanded.columns]
    return pd.concat([part, expanded], axis=1)


def trial_table(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The trial explorer's table: ids, status, selection marks, objectives, params, cost, error."""
    columns = ["trial_id", "status", "selected", "pareto", *[c for c, _ in objectives],
               *param_columns(frame), "epochs_run", "wall_time_s", "num_parameters", "error"]
    return frame[[c for c in dict.fromkeys(columns) if c in frame]]


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("param:")]


def parallel_coordinates_figure(frame: pd.DataFrame, objective: str, mode: str) -> go.Figure:
    """Parallel coordinates: one axis per searched hyper-parameter plus the objective (colour)."""
    usable = frame[frame["status"] != "failed"]
    dims = []
    for column in param_columns(usable):
        values = usable[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.map(lambda v: isinstance(v, (bool, np.bool_))).any() or numeric.isna().any():
            cats = sorted(values.astype(str).unique())
            codes = values.astype(str).map({c: i for i, c in enumerate(cats)})
            dims.append({"label": column[6:], "values": codes.tolist(), "tickvals": list(range(len(cats))),
                         "ticktext": cats})
        else:
            dims.append({"label": column[6:], "values": numeric.tolist()})
    score = pd.to_numeric(usable[objective], errors="coerce")
    dims.append({"label": objective, "values": score.tolist()})
    fig = go.Figure(go.Parcoords(dimensions=dims, line={
        "color": score.tolist(), "colorscale": "Viridis", "reversescale": mode == "min", "showscale": True,
        "colorbar": {"title": {"text": objective}}}))
    # Axis titles sit above the plot and the outer axes' tick labels beside it: margins that hold them
    # (the first axis's ticks to the left; the last axis's title and the colour bar to the right).
    first_ticks = dims[0].get("ticktext") or [f"{v:.3g}" for v in dims[0]["values"] if v == v] if dims else []
    left = max(text_width(first_ticks), text_width([dims[0]["label"]]) // 2 if dims else 0) + 40
    right = text_width([dims[-1]["label"]]) // 2 + 120
    fig.update_layout(title={"text": f"Hyper-parameters vs {objective} ({len(usable)} trials)", "y": 0.97},
                      height=480, margin={"l": left, "r": right, "t": 110, "b": 40})
    return fig


def _distribution(values: pd.Series):
    """An Optuna distribution inferred from the observed values of one parameter (None: constant)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    raw = values.tolist()
    if len({json.dumps(v, sort_keys=True, default=str) for v in raw}) < 2:
        return None
    if all(isinstance(v, (bool, np.bool_, str)) or v is None for v in raw):
        return CategoricalDistribution(sorted(set(raw), key=str))
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        return CategoricalDistribution(sorted({str(v) for v in raw}))
    if all(float(v).is_integer() and not isinstance(v, float) for v in raw):
        return IntDistribution(int(numbers.min()), int(numbers.max()))
    low, high = float(numbers.min()), float(numbers.max())
    return FloatDistribution(low, high, log=low > 0 and high / low >= 100)


def param_importances(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> tuple[pd.DataFrame | None, str]:
    """Hyper-parameter importance for the first objective with Optuna's default evaluator.

    An in-memory Optuna study is rebuilt from the completed trials (create_trial + add_trials).
    Returns (DataFrame[parameter, importance], "") or (None, reason) when it cannot be computed.
    """
    import optuna

    if not objectives:
        return None, "This study declares no objective, so there is nothing to attribute importance to."
    done = frame[frame["status"] == "completed"]
    columns = [c for c, _ in objectives]
    done = done[pd.to_numeric(done[columns[0]], errors="coerce").notna()] if columns[0] in done else done.iloc[0:0]
    if len(done) < 3:
        return None, (f"Hyper-parameter importance needs at least 3 completed trials with an objective value; "
                      f"this study has {len(done)}.")
    distributions = {c[6:]: d for c in param_columns(done) if (d := _distribution(done[c])) is not None}
    if not distributions:
        return None, "Every searched hyper-parameter took a single value, so none can explain the objective."
    directions = ["minimize" if mode == "min" else "maximize" for _, mode in objectives]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per page view
    try:
        study = optuna.create_study(directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    trials = []
    for rec in done.to_dict("records"):
        params = {}
        for name, dist in distributions.items():
            value = rec[f"param:{name}"]
            if isinstance(dist, optuna.distributions.CategoricalDistribution) and value not in dist.choices:
                value = str(value)
            elif isinstance(dist, optuna.distributions.IntDistribution):
                value = int(value)
            elif isinstance(dist, optuna.distributions.FloatDistribution):
                value = float(value)
            params[name] = value
        values = [float(rec[c]) if c in rec and pd.notna(rec[c]) else float("nan") for c in columns]
        if any(math.isnan(v) for v in values):
            continue
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions, values=values))
    study.add_trials(trials)
    target = None
    if len(directions) > 1:  # importance for the first objective, signed so that lower is better
        sign = 1.0 if directions[0] == "minimize" else -1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    try:
        with warnings.catch_warnings():  # PED-ANOVA's "lower target is better" note: the sign above handles it
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
            importances = optuna.importance.get_param_importances(study, target=target)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return None, f"Optuna could not compute importances on {len(trials)} trials: {exc}"
    table = pd.DataFrame({"parameter": list(importances), "importance": [float(v) for v in importances.values()]})
    return table, ""


def importance_figure(table: pd.DataFrame, objective: str) -> go.Figure:
    table = table.sort_values("importance")
    fig = go.Figure(go.Bar(x=table["importance"], y=table["parameter"], orientation="h"))
    fig.update_layout(title=f"Hyper-parameter importance for {objective} (Optuna)", template="plotly_white",
                      height=160 + 35 * len(table), xaxis_title="importance (normalised)")
    return fig


def learning_curve_keys(frame: pd.DataFrame) -> list[str]:
    """Numeric per-epoch keys recorded in the trials' learning curves (objective-like first)."""
    keys: set[str] = set()
    for text in frame["learning_curve"]:
        for epoch in _json_loads(text, []) or []:
            if isinstance(epoch, Mapping):
                keys.update(k for k, v in epoch.items()
                            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool))
    return sorted(keys, key=lambda k: (not k.startswith("objective"), not k.startswith("val_"), k))


def learning_curves_figure(frame: pd.DataFrame, key: str) -> go.Figure:
    """One line per trial: `key` against the epoch, dashed for stopped trials."""
    fig = go.Figure()
    for rec in frame.to_dict("records"):
        epochs = [e for e in (_json_loads(rec["learning_curve"], []) or []) if isinstance(e, Mapping) and key in e]
        if not epochs:
            continue
        x = [e.get("epoch", i + 1) for i, e in enumerate(epochs)]
        fig.add_trace(go.Scatter(x=x, y=[e[key] for e in epochs], mode="lines+markers", name=str(rec["trial_id"]),
                                 line={"dash": "dash" if rec["status"] == "stopped" else "solid"}))
    fig.update_layout(title=f"Learning curves: {key}", xaxis_title="epoch", yaxis_title=key,
                      template="plotly_white", height=420)
    return fig


def curve_distributions(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Learning-curve key groups that form a distribution per epoch: prefix -> keys.

    Keys `<prefix>_<name>` (split at the last "_") sharing a prefix, at least two, whose values in
    every recorded epoch lie in [0, 1] and sum to 1 (e.g. a method's per-combination sampling
    probabilities logged by its epoch-end hook)."""
    groups: dict[str, set[str]] = {}
    for key in learning_curve_keys(frame):
        if "_" in key:
            groups.setdefault(key.rsplit("_", 1)[0], set()).add(key)
    found = {}
    for prefix, keys in groups.items():
        rows = [[e[k] for k in keys] for text in frame["learning_curve"]
                for e in (_json_loads(text, []) or []) if isinstance(e, Mapping) and keys <= e.keys()]
        if len(keys) >= 2 and rows and all(min(r) >= 0 and max(r) <= 1 and abs(sum(r) - 1) < 1e-6 for r in rows):
            found[prefix] = sorted(keys)
    return found


def trial_distribution_figure(frame: pd.DataFrame, trial_id: str, keys: Sequence[str]) -> go.Figure:
    """One trial's distribution keys (see `curve_distributions`) against the epoch, one line per key."""
    rec = frame[frame["trial_id"] == trial_id]
    curve = _json_loads(rec["learning_curve"].iloc[0], []) if len(rec) else []
    epochs = [e for e in curve or [] if isinstance(e, Mapping)]
    fig = go.Figure()
    for key in keys:
        points = [(e.get("epoch", i + 1), e[key]) for i, e in enumerate(epochs) if key in e]
        fig.add_trace(go.Scatter(x=[x for x, _ in points], y=[y for _, y in points], mode="lines+markers",
                                 name=key.rsplit("_", 1)[-1]))
    prefix = os.path.commonprefix(list(keys)).rstrip("_")
    fig.update_layout(title=f"{prefix} of trial {trial_id} over epochs", xaxis_title="epoch",
                      yaxis_title="probability", template="plotly_white", height=420)
    return fig


def pareto_figure(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> tuple[go.Figure, pd.DataFrame]:
    """Scatter of the first two objectives; the Pareto front (stored flags, else computed) highlighted."""
    (x_col, x_mode), (y_col, y_mode) = objectives[0], objectives[1]
    usable = frame[frame["status"] != "failed"].copy()
    usable = usable[pd.to_numeric(usable[x_col], errors="coerce").notna()
                    & pd.to_numeric(usable[y_col], errors="coerce").notna()]
    stored = usable["pareto"].fillna(False).astype(bool)
    if stored.any():
        usable["on_front"] = stored
    else:
        usable["on_front"] = pareto_front(usable[[x_col, y_col]].to_numpy(float), [x_mode, y_mode]) \
            if len(usable) else []
    fig = go.Figure()
    for on_front, name, style in ((False, "dominated", {"color": "#9e9e9e", "size": 8}),
                                  (True, "Pareto front", {"color": "#d62728", "size": 11})):
        part = usable[usable["on_front"] == on_front].sort_values(x_col)
        fig.add_trace(go.Scatter(x=part[x_col], y=part[y_col], mode="markers+lines" if on_front else "markers",
                                 marker=style, name=name, text=part["trial_id"],
                                 hovertemplate="%{text}<br>%{x:.4f}, %{y:.4f}<extra></extra>"))
    fig.update_layout(title=f"Pareto front: {x_col} ({x_mode}) vs {y_col} ({y_mode})",
                      xaxis_title=x_col, yaxis_title=y_col, template="plotly_white", height=440)
    columns = ["trial_id", "status", x_col, y_col, "num_parameters", "on_front"]
    return fig, usable[[c for c in columns if c in usable]].reset_index(drop=True)


# ----------------------------------------------------------------------------- downloads


def search_progress(frame: pd.DataFrame, objective: str, mode: str) -> pd.DataFrame:
    """Every reported epoch of a study's trials, in the order they finished, with the best objective
    so far: the optimisation history of optuna-dashboard, per epoch instead of per trial.

    The per-epoch value is the learning curve's `objective` column's metric (`best_<m>` -> `<m>`).
    Epochs finish at the trial's `started_at` plus its cumulative `epoch_time_s`; a store without
    `started_at` is replayed as if the trials ran one after another in trial-id order (`timed` False).
    Columns: trial_id, epoch, value, status, last (the trial's last epoch), wall_s, epochs_consumed, best.
    """
    metric = objective[len("best_"):] if objective.startswith("best_") else objective
    rows, clock, ran = [], 0.0, frame[frame["status"] != "failed"]
    timed = "started_at" in ran.columns and ran["started_at"].notna().any()
    origin = float(ran["started_at"].min()) if timed else 0.0
    for rec in ran.sort_values("trial_id").to_dict("records"):
        epochs = [e for e in (_json_loads(rec["learning_curve"], []) or []) if isinstance(e, Mapping)]
        start = float(rec["started_at"]) - origin if timed and _finite(rec.get("started_at")) else clock
        for i, e in enumerate(epochs):
            value = e.get(metric, e.get("objective"))
            start += float(e.get("epoch_time_s") or 0.0)
            if _finite(value):
                rows.append({"trial_id": rec["trial_id"], "epoch": int(e.get("epoch", i + 1)), "value": float(value),
                             "status": rec["status"], "last": i == len(epochs) - 1, "wall_s": start})
        clock = max(clock, start)
    events = pd.DataFrame(rows, columns=["trial_id", "epoch", "value", "status", "last", "wall_s"])
    events = events.sort_values("wall_s", kind="stable", ignore_index=True)
    events["epochs_consumed"] = np.arange(1, len(events) + 1)
    events["best"] = events["value"].cummin() if mode == "min" else events["value"].cummax()
    events.attrs["timed"] = bool(timed)
    return events


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def search_progress_figure(events: pd.DataFrame, objective: str) -> go.Figure:
    """Best-so-far objective against epochs consumed (left) and wall time (right); every epoch's
    value as a faint dot, trials ASHA stopped as an x at the epoch they stopped."""
    clock = "wall time (s)" if events.attrs.get("timed", True) else "wall time (s), trials one after another"
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("against epochs consumed", "against wall time"))
    stopped = events[(events["status"] == "stopped") & events["last"]]
    for col, x in ((1, "epochs_consumed"), (2, "wall_s")):
        legend = col == 1
        fig.add_trace(go.Scatter(x=events[x], y=events["value"], mode="markers", name="epoch value",
                                 marker={"color": "rgba(99,110,250,0.35)", "size": 6}, text=events["trial_id"],
                                 showlegend=legend, legendgroup="value"), row=1, col=col)
        fig.add_trace(go.Scatter(x=events[x], y=events["best"], mode="lines", name="best so far",
                                 line={"color": "#ef553b", "shape": "hv"}, showlegend=legend, legendgroup="best"),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=stopped[x], y=stopped["value"], mode="markers", name="stopped early",
                                 marker={"symbol": "x", "size": 10, "color": "#222"}, showlegend=legend,
                                 legendgroup="stopped", text=[f"{t} stopped at epoch {e}" for t, e in
                                                              zip(stopped["trial_id"], stopped["epoch"])]),
                      row=1, col=col)
    fig.update_xaxes(title_text="epochs consumed (all trials)", row=1, col=1)
    fig.update_xaxes(title_text=clock, row=1, col=2)
    fig.update_yaxes(title_text=objective, row=1, col=1)
    fig.update_layout(title=f"Search progress: best {objective} so far", template="plotly_white", height=420)
    return fig


def chrome_for_png() -> str | None:
    """The Chrome/Chromium kaleido will drive for PNG export: $BROWSER_PATH or one on PATH."""
    if path := os.environ.get("BROWSER_PATH"):
        return path if os.access(path, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def download_item(table_name: str, table: pd.DataFrame | None, figure: go.Figure | None) -> dict:
    """One Downloads entry: a file stem, the table as CSV text and the figure as Plotly JSON."""
    return {"table_name": download_name(table_name),
            "table_csv": table.to_csv(index=False) if table is not None else None,
            "figure_json": figure.to_json() if figure is not None else None}


def default_downloads(snap: StoreSnapshot) -> dict[str, dict]:
    """Each page's table and figure in its initial selection, computed from the store alone, so the
    Downloads page offers them without the other pages having run (page title -> download_item)."""
    out = {"Studies overview": download_item("studies", studies_overview(snap), None)}
    studies, default, _ = curve_study_options(snap)
    if default:
        pick = default_curve_selection(curve_choices(snap.curves[snap.curves["study"].isin(default)]))
        if pick["metric"] is not None:
            agg = aggregate_curves(snap.curves, snap.trials, default, metric=pick["metric"],
                                   pattern=pick["pattern"], fill=pick["fill"], split=pick["split"])
            one = agg[agg["subset"] == pick["subset"]]
            title = subset_curves_title(pick["metric"], pick["subset"], pick["pattern"], pick["fill"])
            out["Robustness curves"] = download_item("robustness_curves", one, curves_figure(one, pick["metric"], title))
    if not snap.summary.empty:
        pick = {"split": sorted(snap.summary["split"].dropna().unique(), key=lambda s: s != "test")[0],
                "metric": order_metrics(snap.summary["metric"].dropna().unique())[0]}
        for column, value in (("pattern", "random"), ("fill", "zero")):
            options = sorted(snap.summary[column].dropna().unique())
            pick[column] = options[preferred(options, value)]
        table = auilc_table(snap.summary, snap.trials, default or sorted(set(snap.summary["study"].astype(str))),
                            **pick)
        if not table.empty:
            out["AUILC tables"] = download_item("auilc", table, auilc_heatmap(table, pick["metric"]))
    names = snap.study_names()
    if names:
        frame = trial_frame(snap.trials, names[0])
        objective = study_info(snap).set_index("study").loc[names[0], "objective"]
        out["Trial explorer"] = download_item(f"trials_{names[0]}",
                                              trial_table(frame, objective_columns(frame, objective)), None)
    return out


def download_name(name: str) -> str:
    """A bare file stem for a download, whatever a store row holds: letters, digits, `-` and
    single `_` only, so a study named `../../x` cannot suggest a path to the browser."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", str(name)).strip("_")[:100] or "download"


def figure_png(fig: go.Figure, width: int = 1200, height: int | None = None) -> bytes:
    """PNG bytes of a figure through kaleido (needs a Chrome; see `chrome_for_png`)."""
    return fig.to_image(format="png", width=width, height=height or fig.layout.height or 500, scale=1)


def figure_html(fig: go.Figure) -> str:
    """A self-contained HTML page of the figure (plotly.js embedded: opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True)
