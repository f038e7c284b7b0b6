"""Robustness of methods over training seeds, in one command: AUILC and inter-modality tables.

    python -m benchmarks.methods --datasets "synthetic:mosi?scale=0.25" --models umdf,dqf,late_fusion \
        --seeds 0,1,2 --epochs 8
    python -m benchmarks.methods --datasets synthetic:iemocap --variant mculora \
        --variant "no-dpft=mculora:dpft_step=0" --seeds 0,1,2

Each (dataset, variant, seed) trains with the one loop (selection on validation), then the
selected checkpoint is evaluated once on the test grid (mask seed 0) and the inter-modality
conditions. Printed per dataset, mean ± std over training seeds:
  * AUILC on {t,a,v} of the task's primary metric, and that metric on complete test inputs;
  * the primary metric under each inter-modality condition (UMDF's Table 1: available modalities);
  * with `--split ood` as well (datasets that have it), the same on the `ood` split.
A variant is `LABEL=MODEL[:key=value,key=value]` (keys routed as in `affectune train --set`);
`--models a,b` adds plain variants. Each starts from the model's `study_defaults`.
This is a measurement script (minutes to hours), not a test.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

from affectune.train_cli import parse_csv, parse_value


@dataclass
class Variant:
    label: str
    model: str
    overrides: list[str] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    label, sep, rest = text.partition("=")
    if not sep:  # a bare model name
        return Variant(text, text)
    model, _, sets = rest.partition(":")
    return Variant(label, model, [s for s in sets.split(",") if s])


def base_config(variant: Variant, dataset: str, epochs: int | None, seed: int) -> dict:
    """The model's study defaults, the variant's overrides, this seed."""
    from affectune.models import model_class
    from affectune.train_cli import apply_overrides

    defaults = dict(model_class(variant.model).study_defaults)
    config = {**defaults, "model": variant.model, "dataset": dataset, "seed": seed, "num_threads": 1,
              "model_config": dict(defaults.get("model_config", {}))}
    if epochs is not None:
        config["epochs"] = epochs
    return apply_overrides(config, variant.overrides)


def measure_one(variant: Variant, dataset, config: dict, splits: tuple[str, ...]) -> dict[str, float]:
    """Train, then {"<split>:auilc_tav", "<split>:complete", "<split>:inter_<label>", "params"}."""
    from affectune.evaluate import primary_auilc, robustness
    from affectune.metrics import PRIMARY_METRIC
    from affectune.train import load_checkpoint, train_loop

    metric = PRIMARY_METRIC[dataset.task]
    with tempfile.TemporaryDirectory(prefix="affectune-methods-") as tmp:
        outcome = train_loop({**config, "checkpoint_dir": tmp}, dataset=dataset)
        model, _ = load_checkpoint(outcome.checkpoint_path)
    row = {"params": float(outcome.num_parameters), "best_epoch": float(outcome.best_epoch)}
    for split in splits:
        result = robustness(model, dataset, split, seeds=(0,))
        row[f"{split}:auilc_tav"] = primary_auilc(result.summary, "tav", metric)
        row[f"{split}:complete"] = result.complete[metric]
        inter = result.curves[(result.curves["condition"] == "inter") & (result.curves["metric"] == metric)]
        for label, value in zip(inter["subset"], inter["value"]):
            row[f"{split}:inter_{label}"] = float(value)
    return row


def _cell(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.3f}" + (f" ± {std:.3f}" if math.isfinite(std) else "")


def format_tables(source: str, task: str, rows: dict[str, list[dict]], splits: tuple[str, ...]) -> str:
    """Markdown tables (AUILC / complete / inter-modality) for one dataset."""
    from affectune.metrics import PRIMARY_METRIC, metric_info
    from affectune.missing import INTER_CONDITIONS, subset_label

    metric = metric_info(PRIMARY_METRIC[task]).label
    inter = [subset_label(s) for s in INTER_CONDITIONS]
    lines = [f"### {source} ({metric}; mean ± std over {max(len(r) for r in rows.values())} training seeds)", ""]
    for split in splits:
        head = ["method", "params", f"AUILC {{t,a,v}} ({split})", f"complete ({split})",
                *(f"{{{','.join(lb)}}}" for lb in inter)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, runs in rows.items():
            cells = [label, f"{int(runs[0]['params']):,}", _cell([r[f"{split}:auilc_tav"] for r in runs]),
                     _cell([r[f"{split}:complete"] for r in runs]),
                     *(_cell([r.get(f"{split}:inter_{lb}", math.nan) for r in runs]) for lb in inter)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", type=parse_csv, required=True, help="comma-separated source strings")
    p.add_argument("--models", type=parse_csv, default=(), help="plain variants: registered model names")
    p.add_argument("--variant", action="append", default=[], help="LABEL=MODEL[:key=value,...]; repeatable")
    p.add_argument("--seeds", type=lambda s: parse_csv(s, int), default=(0, 1, 2), help="training seeds")
    p.add_argument("--epochs", type=int, default=None, help="override the models' study_defaults epochs")
    p.add_argument("--split", action="append", default=None, help="test (default), ood; repeatable")
    p.add_argument("--out", help="also write the Markdown tables to this file")
    args = p.parse_args(argv)
    from affectune.data import load

    variants = [parse_variant(v) for v in (*args.models, *args.variant)]
    if not variants:
        p.error("name at least one --models entry or --variant")
    report = []
    for source in args.datasets:
        dataset = load(source)
        splits = tuple(s for s in (args.split or ["test"]) if s in dataset.splits)
        rows: dict[str, list[dict]] = {}
        for variant in variants:
            for seed in args.seeds:
                row = measure_one(variant, dataset, base_config(variant, source, args.epochs, seed), splits)
                rows.setdefault(variant.label, []).append(row)
                print(f"[{source}] {variant.label} seed {seed}: " + ", ".join(
                    f"{k}={v:.4f}" for k, v in row.items() if ":" in k and "inter" not in k), flush=True)
        report.append(format_tables(source, dataset.task, rows, splits))
    text = "\n".join(report)
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"<!-- python -m benchmarks.methods {' '.join(sys.argv[1:] if argv is None else argv)} -->\n"
                    + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
