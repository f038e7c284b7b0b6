"""What each modality is worth on the synthetic presets: train on complete inputs, remove modalities.

    python -m benchmarks.modality_removal                                  # late_fusion, 4 presets, seeds 0,1,2
    python -m benchmarks.modality_removal --presets mosi --model dqf --seeds 0 --scale 0.25

Per preset, a fusion model is trained with the one loop (selection on validation) on the preset at
`--scale` (default: each preset's quarter-size MOSI/IEMOCAP, 0.1 MOSEI/MELD), then its selected
checkpoint is scored on the test split with every modality present and with one or two modalities
removed entirely (zero fill at rate 1.0: exactly the inter-modality conditions of
`affectune.evaluate`). Printed per preset, mean ± std over training seeds: the score (Pearson
correlation for regression, weighted F1 for classification; MAE / WAR beside it) and the share of
the complete-input score each removal costs. This is a measurement script (minutes), not a test.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile

import numpy as np

from affectune.train_cli import parse_csv

SCORE = {"regression": ("corr", "mae"), "classification": ("wf1", "war")}
"""(headline score whose share is reported, second metric shown beside it) per task."""
DEFAULT_SCALE = {"mosi": 0.25, "mosei": 0.1, "iemocap": 0.25, "meld": 0.1}
"""Roughly 300-1600 training samples per preset: minutes on two CPU cores."""
REMOVALS = (("none", "tav"), ("t", "av"), ("a", "tv"), ("v", "ta"), ("t,a", "v"), ("t,v", "a"), ("a,v", "t"))
"""(removed modalities, label of the available ones as `affectune.missing.subset_label` writes it)."""


def measure(model: str, source: str, seed: int, epochs: int | None) -> dict[str, dict[str, float]]:
    """Train `model` on complete inputs of `source`; {available label: {metric: value}} on test."""
    from affectune.data import load
    from affectune.evaluate import robustness
    from affectune.train import load_checkpoint, train_loop
    from benchmarks.methods import Variant, base_config

    dataset = load(source)
    config = base_config(Variant(model, model), source, epochs, seed)
    with tempfile.TemporaryDirectory(prefix="affectune-removal-") as tmp:
        outcome = train_loop({**config, "checkpoint_dir": tmp}, dataset=dataset)
        trained, _ = load_checkpoint(outcome.checkpoint_path)
    result = robustness(trained, dataset, "test", seeds=(0,), subsets=(), rates=(0.0,))
    inter = result.curves[result.curves["condition"] == "inter"]
    return {label: dict(zip(rows["metric"], rows["value"])) for label, rows in inter.groupby("subset")}


def removal_costs(runs: list[dict], metric: str) -> dict[str, list[float]]:
    """Per removal, the share of the complete-input `metric` lost in each run (higher is better)."""
    return {removed: [(r["tav"][metric] - r[available][metric]) / abs(r["tav"][metric]) for r in runs]
            for removed, available in REMOVALS[1:]}


def _cell(values: list[float], pct: bool = False) -> str:
    scale, unit = (100.0, "%") if pct else (1.0, "")
    mean = float(np.mean(values)) * scale
    std = float(np.std(values, ddof=1)) * scale if len(values) > 1 else math.nan
    digits = 1 if pct else 3
    return f"{mean:.{digits}f}{unit}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def format_table(rows: dict[str, tuple[str, list[dict]]]) -> str:
    """Markdown: per preset, the scores with nothing / each modality / each pair removed, and costs."""
    head = ["preset", "metric", *(f"-{{{r}}}" if r != "none" else "complete" for r, _ in REMOVALS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for source, (task, runs) in rows.items():
        score, other = SCORE[task]
        for metric in (score, other):
            lines.append("| " + " | ".join([source, metric, *(
                _cell([r[available][metric] for r in runs]) for _, available in REMOVALS)]) + " |")
        costs = removal_costs(runs, score)
        lines.append("| " + " | ".join([source, f"{score} lost", "", *(
            _cell(costs[removed], pct=True) for removed, _ in REMOVALS[1:])]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", type=parse_csv, default=tuple(DEFAULT_SCALE), help="synthetic presets")
    p.add_argument("--model", default="late_fusion", help="registered model, trained from its study_defaults")
    p.add_argument("--seeds", type=lambda s: parse_csv(s, int), default=(0, 1, 2), help="training seeds")
    p.add_argument("--epochs", type=int, default=None, help="override the model's study_defaults epochs")
    p.add_argument("--scale", type=float, default=None, help="one scale for every preset (default: DEFAULT_SCALE)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = {}
    for preset in args.presets:
        source = f"synthetic:{preset}?scale={args.scale or DEFAULT_SCALE.get(preset, 0.25)}"
        runs = []
        for seed in args.seeds:
            runs.append(measure(args.model, source, seed, args.epochs))
            score = SCORE["regression" if "corr" in runs[-1]["tav"] else "classification"][0]
            print(f"[{source}] {args.model} seed {seed}: " + ", ".join(
                f"{available}={runs[-1][available][score]:.3f}" for _, available in REMOVALS), flush=True)
        rows[source] = ("regression" if "corr" in runs[0]["tav"] else "classification", runs)
    print(f"\n{args.model}, mean ± std over training seeds {','.join(map(str, args.seeds))}:\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
