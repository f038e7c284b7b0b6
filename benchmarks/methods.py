"""Robustness of methods over training seeds, in one command: AUILC and inter-modality tables.

    python -m benchmarks.methods --datasets "synthetic:mosi?scale=0.25" --models umdf,dqf,late_fusion \
        --seeds 0,1,2 --epochs 8
    python -m benchmarks.methods --datasets synthetic:iemocap --variant mculora \
        --variant "no-dpft=mculora:dpft_step=0" --seeds 0,1,2

Each (dataset, variant, seed) trains with the one loop (selection on validation), in this
process, then the selected checkpoint is evaluated once on the test grid (mask seed 0) and the
inter-modality conditions. Printed per dataset with the comparison's tables (affectune.compare),
mean ± std over training seeds, best in bold:
  * AUILC of the task's primary metric per missing subset ({t,a,v} among them);
  * the primary metric under each inter-modality condition (UMDF's Table 1: available modalities;
    {t,a,v} = complete inputs);
  * with `--split ood` as well (datasets that have it), the same on the `ood` split.
`studies/compare_methods.py` is the same comparison on Ray, stored, with significance tests.
A variant is `LABEL=MODEL[:key=value,key=value]` (keys routed as in `affectune train --set`);
`--models a,b` adds plain variants. Each starts from the model's `study_defaults`.
This is a measurement script (minutes to hours), not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field

from affectune.train_cli import parse_csv


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


def measure_one(variant: Variant, dataset, config: dict, splits: tuple[str, ...]):
    """Train, then (the robustness-grid curves of every split, {"params", "best_epoch"})."""
    import pandas as pd

    from affectune.evaluate import robustness
    from affectune.train import load_checkpoint, train_loop

    with tempfile.TemporaryDirectory(prefix="affectune-methods-") as tmp:
        outcome = train_loop({**config, "checkpoint_dir": tmp}, dataset=dataset)
        model, _ = load_checkpoint(outcome.checkpoint_path)
    curves = pd.concat([robustness(model, dataset, split, seeds=(0,)).curves for split in splits], ignore_index=True)
    return curves, {"params": outcome.num_parameters, "best_epoch": outcome.best_epoch}


def format_tables(source: str, task: str, curves, n_seeds: int) -> str:
    """The comparison's Markdown tables (affectune.compare) of the task's primary metric: AUILC per
    missing subset, and the metric per inter-modality condition (the {t,a,v} one = complete inputs)."""
    from affectune.compare import build_tables, format_markdown, per_run_values
    from affectune.metrics import PRIMARY_METRIC

    tables = build_tables(per_run_values(curves, task))
    return format_markdown(tables, None, f"{source} (mean ± std over {n_seeds} training seeds)",
                           metrics=[PRIMARY_METRIC[task]])


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
    import pandas as pd

    from affectune.data import load

    variants = [parse_variant(v) for v in (*args.models, *args.variant)]
    if not variants:
        p.error("name at least one --models entry or --variant")
    report = []
    for source in args.datasets:
        dataset = load(source)
        splits = tuple(s for s in (args.split or ["test"]) if s in dataset.splits)
        runs = []
        for variant in variants:
            for seed in args.seeds:
                curves, info = measure_one(variant, dataset, base_config(variant, source, args.epochs, seed), splits)
                runs.append(curves.assign(method=variant.label, train_seed=seed))
                print(f"[{source}] {variant.label} seed {seed}: {info['params']:,} parameters, "
                      f"best epoch {info['best_epoch']}", flush=True)
        report.append(format_tables(source, dataset.task, pd.concat(runs, ignore_index=True), len(args.seeds)))
    text = "\n".join(report)
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"<!-- python -m benchmarks.methods {' '.join(sys.argv[1:] if argv is None else argv)} -->\n"
                    + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
