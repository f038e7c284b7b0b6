"""A paper's published numbers next to ours: the data files, the dataset-shape check, the side-by-side table.

    paper = load_paper("studies/published/<paper>.toml")
    requirement, tables = paper.select(load(source))   # ShapeMismatch names the source, expected and found
    frame = side_by_side(result.tables, tables, paper.method)   # result: affectune.compare.run_comparison's
    print(format_side_by_side(frame))

A data file (TOML, one per paper) holds the paper's citation, `[datasets.<key>]` requirements (the
dataset shape a table needs: format, task, class count, sequence or utterance-level features,
aligned) and `[[tables]]` of published numbers, each with its table number and section, the
dataset key, the layout of our table it lines up with ("auilc": DQF Table 2's AUILC per missing
subset; "inter": the metric with only the listed modalities available), the paper's column names,
their metric names here, which columns are percentages, and rows `{condition, values}` as printed.
A paper whose text prints no numbers says why in `no_numbers` and has no tables. The layout is
documented in docs/studies.md ("Reproduce a paper"). The platform never names a method: the files do.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field

import pandas as pd

from affectune.metrics import metric_info
from affectune.missing import subset_label

FEATURE_KINDS = ("sequence", "utterance")
"""`features` of a requirement: a frame sequence in every modality, or one vector per utterance."""
LAYOUTS = ("auilc", "inter")
"""Our tables a published table lines up with (affectune.compare.TABLE_TITLES)."""
LETTERS = {"t": "text", "l": "text", "a": "audio", "v": "vision"}
"""Modality letters papers print in conditions ("{l, a}" in UMDF, "{v, t}" in DQF)."""


class ShapeMismatch(ValueError):
    """The dataset's shape is not the one the paper's tables need (the message says both)."""


@dataclass
class Requirement:
    """The dataset shape one of a paper's tables needs; None = not fixed by the paper."""

    key: str
    """Name of the requirement in its file ([datasets.<key>]); tables refer to it."""
    corpus: str
    """The corpus the paper used (e.g. "CMU-MOSEI"); a source path that names it selects it."""
    section: str
    """Where the paper says so."""
    format: str | None = None
    """Source scheme: "mmsa" or "merbench"."""
    task: str | None = None
    """"regression" or "classification"."""
    num_classes: int | None = None
    """Classes the paper's table fixes (classification)."""
    features: str | None = None
    """"sequence" (frames in every modality) or "utterance" (one vector per modality)."""
    aligned: bool | None = None
    """Whether the modalities must share the text's frame axis (True) or must not (False)."""

    def __post_init__(self):
        if self.format not in (None, "mmsa", "merbench"):
            raise ValueError(f"[datasets.{self.key}] format must be mmsa or merbench, got {self.format!r}")
        if self.task not in (None, "regression", "classification"):
            raise ValueError(f"[datasets.{self.key}] task must be regression or classification, got {self.task!r}")
        if self.features not in (None, *FEATURE_KINDS):
            raise ValueError(f"[datasets.{self.key}] features must be one of {FEATURE_KINDS}, got {self.features!r}")
        if not self.section:
            raise ValueError(f"[datasets.{self.key}] needs the section of the paper that states it")

    def describe(self) -> str:
        """"CMU-MOSEI: merbench format, regression, frame sequences in every modality"."""
        parts = [f"{self.format} format" if self.format else None, self.task,
                 f"{self.num_classes} classes" if self.num_classes else None,
                 {"sequence": "frame sequences in every modality", "utterance": "one feature vector per "
                  "modality (utterance level)"}.get(self.features),
                 {True: "aligned", False: "unaligned"}.get(self.aligned)]
        return f"{self.corpus}: " + (", ".join(p for p in parts if p) or "any shape")

    def problems(self, dataset, check_format: bool = True) -> list[str]:
        """What in `dataset` differs from this requirement (empty: it fits)."""
        scheme = dataset.source.split(":", 1)[0]
        frames = dataset.seq_lens
        found_features = ("sequence" if min(frames.values()) > 1 else
                          "utterance" if max(frames.values()) == 1 else "mixed")
        out = []
        if check_format and self.format and scheme != self.format:
            out.append(f"format {scheme}, not {self.format}")
        if self.task and dataset.task != self.task:
            out.append(f"task {dataset.task}, not {self.task}")
        if self.num_classes and dataset.task == "classification" and dataset.num_classes != self.num_classes:
            out.append(f"{dataset.num_classes} classes, not {self.num_classes}")
        if self.features and found_features != self.features:
            shown = ", ".join(f"{m} {t}" for m, t in frames.items())
            out.append(f"{found_features} features (frames per modality: {shown}), not {self.features}")
        if self.aligned is not None and dataset.aligned != self.aligned:
            out.append(f"{'aligned' if dataset.aligned else 'unaligned'} data, not "
                       f"{'aligned' if self.aligned else 'unaligned'}")
        return out

    def named_in(self, source: str) -> bool:
        """Whether `source` (a path) names this corpus ("mosei" for CMU-MOSEI, "sims" for CH-SIMS)."""
        short = re.sub(r"^(cmu|ch)-", "", self.corpus.lower())
        return short in source.lower() or self.key.lower() in source.lower()


@dataclass
class PublishedTable:
    """One block of published numbers: rows of a paper's table that line up with one of our tables."""

    paper: str
    table: str
    """The paper's table number as printed ("2", "X")."""
    section: str
    """The section (or page) the table is printed in."""
    dataset: Requirement
    layout: str
    """"auilc" or "inter" (LAYOUTS)."""
    columns: list[str]
    """The paper's column names, in the order of each row's values."""
    metrics: dict[str, str]
    """Paper column -> our metric name."""
    rows: list[dict]
    """{"condition": as printed, "values": [one per column]} in the paper's units."""
    percent: list[str] = field(default_factory=list)
    """Columns printed as percentages (our metrics are fractions)."""
    caption: str = ""
    approximate: bool = False
    """The figures are rounded by the text they come from (printed with ≈)."""
    note: str = ""

    def __post_init__(self):
        where = f"{self.paper} table {self.table!r}"
        if not self.table or not self.section:
            raise ValueError(f"{where}: every published table needs its table number and section")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{where}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        for column in self.columns:
            metric_info(self.metrics[column])  # KeyError names an unknown metric
        for row in self.rows:
            if len(row["values"]) != len(self.columns):
                raise ValueError(f"{where}: row {row['condition']} has {len(row['values'])} values for "
                                 f"{len(self.columns)} columns {self.columns}")
            condition_subset(row["condition"])

    def entries(self) -> list[dict]:
        """One dict per published number: paper, table, section, dataset, condition, subset, metric, value."""
        out = []
        for row in self.rows:
            for column, value in zip(self.columns, row["values"]):
                out.append({"paper": self.paper, "table": self.table, "section": self.section,
                            "dataset": self.dataset.corpus, "layout": self.layout, "condition": row["condition"],
                            "subset": condition_subset(row["condition"]), "column": column,
                            "metric": self.metrics[column], "value": float(value),
                            "scale": 100.0 if column in self.percent else 1.0, "approximate": self.approximate})
        return out


def condition_subset(condition: str) -> str:
    """Our subset label of a printed condition: "{v, a}" -> "av", "{l, a, v}" -> "tav"."""
    letters = re.findall(r"[a-z]+", condition.lower())
    if not letters or any(x not in LETTERS for x in letters):
        raise ValueError(f"condition {condition!r}: expected modality letters from {sorted(LETTERS)}")
    return subset_label({LETTERS[x] for x in letters})


@dataclass
class Paper:
    """A paper's data file: its requirements and published tables."""

    paper: str
    method: str
    """The registered method the paper's protocol trains."""
    citation: str
    text: str
    """Which text the numbers were copied from."""
    datasets: dict[str, Requirement]
    tables: list[PublishedTable]
    no_numbers: str = ""
    """Why the file has no tables (the paper's text prints none); empty when it has some."""
    path: str = ""

    def entries(self) -> list[dict]:
        return [e for t in self.tables for e in t.entries()]

    def select(self, dataset, corpus: str | None = None, allow_synthetic: bool = False):
        """(requirement, its published tables) for `dataset`, or ShapeMismatch saying what the
        paper's tables need and what was found. `corpus` names the requirement (key or corpus name)
        when the source path does not; synthetic data is refused unless `allow_synthetic` (then the
        format is not checked, the rest is)."""
        source = dataset.source
        synthetic = source.startswith("synthetic:")
        if synthetic and not allow_synthetic:
            raise ShapeMismatch(f"{source}: synthetic data is not one of the {self.paper} paper's datasets; give "
                                f"the real files ({self._expected()}) or pass --allow-synthetic to run the "
                                "protocol on it anyway (its numbers are then not comparable)")
        candidates = self._candidates(source, corpus)
        fits = {r.key: r.problems(dataset, check_format=not synthetic) for r in candidates}
        matching = [r for r in candidates if not fits[r.key]]
        if not matching:
            found = "; ".join(f"for {r.corpus}: {', '.join(fits[r.key])}" for r in candidates)
            raise ShapeMismatch(f"{source}: the {self.paper} paper's tables need "
                                f"{'; or '.join(r.describe() for r in candidates)}. Found {found}")
        if len(matching) > 1:
            raise ShapeMismatch(f"{source}: fits the {self.paper} tables of {', '.join(r.corpus for r in matching)}; "
                                "name the corpus with --corpus (the source path names none of them)")
        chosen = matching[0]
        return chosen, [t for t in self.tables if t.dataset.key == chosen.key]

    def _candidates(self, source: str, corpus: str | None) -> list[Requirement]:
        everything = list(self.datasets.values())
        if corpus:
            named = [r for r in everything if corpus.lower() in (r.key.lower(), r.corpus.lower())]
            if not named:
                raise ShapeMismatch(f"--corpus {corpus!r}: the {self.paper} paper's tables use "
                                    f"{', '.join(r.corpus for r in everything)}")
            return named
        return [r for r in everything if r.named_in(source)] or everything

    def _expected(self) -> str:
        return "; or ".join(r.describe() for r in self.datasets.values())


def load_paper(path: str) -> Paper:
    """The Paper of a data file; ValueError names the file and the problem."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    name = raw.get("paper", os.path.basename(path))
    try:
        datasets = {k: Requirement(key=k, **v) for k, v in raw["datasets"].items()}
        tables = [PublishedTable(paper=name, dataset=datasets[t.pop("dataset")], **t)
                  for t in (dict(t) for t in raw.get("tables", []))]
        paper = Paper(paper=name, method=raw["method"], citation=raw["citation"], text=raw["text"],
                      datasets=datasets, tables=tables, no_numbers=raw.get("no_numbers", ""), path=path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc.args[0] if exc.args else exc}") from None
    if bool(paper.tables) == bool(paper.no_numbers):
        raise ValueError(f"{path}: give published tables or say in no_numbers why the paper has none, not "
                         f"{'both' if paper.tables else 'neither'}")
    return paper


def load_papers(directory: str) -> dict[str, Paper]:
    """file stem -> Paper for every *.toml in `directory`."""
    return {name[:-5]: load_paper(os.path.join(directory, name))
            for name in sorted(os.listdir(directory)) if name.endswith(".toml")}


# --------------------------------------------------------------------------- side by side
def side_by_side(tables: pd.DataFrame, published: list[PublishedTable], method: str,
                 split: str = "test") -> pd.DataFrame:
    """One row per published number with `method`'s mean ± std over train seeds on `split` (the same
    cell of our `layout` table, in the paper's units) and ours minus the paper's; NaN where we have no cell."""
    ours = tables[(tables["split"] == split) & (tables["method"] == method)].set_index(["table", "subset", "metric"])
    rows = []
    for block in published:
        for entry in block.entries():
            key = (entry["layout"], entry["subset"], entry["metric"])
            cell = ours.loc[key] if key in ours.index else None
            scale = entry["scale"]
            mean = float(cell["mean"]) * scale if cell is not None else math.nan
            std = float(cell["std"]) * scale if cell is not None else math.nan
            rows.append({**entry, "split": split, "ours_mean": mean, "ours_std": std,
                         "n_seeds": int(cell["n_seeds"]) if cell is not None else 0, "diff": mean - entry["value"]})
    return pd.DataFrame(rows)


def format_side_by_side(frame: pd.DataFrame) -> str:
    """Markdown: one table per published block (its table number, section and dataset), a row per
    (condition, metric): the paper's value, ours (mean ± std over train seeds) and the difference."""
    out = []
    for (table, section, dataset, layout), part in frame.groupby(["table", "section", "dataset", "layout"], sort=False):
        n = int(part["n_seeds"].max())
        what = "AUILC with the modalities listed subject to missingness" if layout == "auilc" else \
            "only the modalities listed available"
        out += [f"**Table {table}** (section {section}), {dataset}: {what}; ours on the "
                f"{part['split'].iloc[0]} split, mean ± std over {n} train seeds", "",
                "| condition | metric | paper | ours | ours − paper |", "|---|---|---|---|---|"]
        for _, row in part.iterrows():
            digits = 3 if row["scale"] == 1.0 else 2
            paper = ("≈" if row["approximate"] else "") + f"{row['value']:.{digits}f}"
            if math.isfinite(row["ours_mean"]):
                std = f" ± {row['ours_std']:.{digits}f}" if math.isfinite(row["ours_std"]) else ""
                ours, diff = f"{row['ours_mean']:.{digits}f}{std}", f"{row['diff']:+.{digits}f}"
            else:
                ours, diff = "not measured", ""
            out.append(f"| {row['condition']} | {row['column']} | {paper} | {ours} | {diff} |")
        out.append("")
    return "\n".join(out)


def export_side_by_side(frame: pd.DataFrame, directory: str, name: str, header: str = "") -> list[str]:
    """Write <name>-vs-paper.md (header + format_side_by_side) and <name>-vs-paper.csv; return the paths."""
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"{name}-vs-paper")
    with open(stem + ".md", "w") as f:
        f.write((header + "\n\n" if header else "") + format_side_by_side(frame) + "\n")
    frame.to_csv(stem + ".csv", index=False)
    return [stem + ".md", stem + ".csv"]
