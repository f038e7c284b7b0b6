"""Reproduce a paper's table on your files: its method with its `paper` preset, next to the published numbers.

    python studies/reproduce.py --paper dqf --data "merbench:/data/mosei?text=features/<text folder>&..."
    python studies/reproduce.py --paper umdf --data mmsa:/data/MOSI/aligned_50.pkl --out results/repro
    python studies/reproduce.py --paper umdf --data mmsa:/data/MOSI/aligned_50.pkl --smoke-test --local
    python studies/reproduce.py --paper cider --data mmsa:/data/x.pkl --corpus mosi   # path names no corpus

The paper's method is trained over --train-seeds (5 by default) with its `paper` preset; each seed's
checkpoint is the epoch selected on the validation split, and every number is on the test split (the
paper's protocol: DQF's AUILC grid and UMDF's inter-modality conditions, on identical masks). The
dataset must have the shape the paper's table needs (studies/published/<paper>.toml, [datasets]):
anything else is refused with what was expected and what was found. Synthetic data is refused unless
--allow-synthetic. Numbers on small or synthetic data are not comparable with the paper's.
"""

import argparse
import sys
from pathlib import Path

from affectune.compare import ComparisonExists, ComparisonSpec, default_name, export, format_markdown, \
    resolve_configs, run_comparison
from affectune.metrics import PRIMARY_METRIC
from affectune.reproduce import ShapeMismatch, export_side_by_side, format_side_by_side, load_papers, side_by_side
from affectune.studies.cli import add_comparison_flags, apply_base_flags, apply_comparison_smoke_test, \
    comparison_run_settings

PUBLISHED = Path(__file__).resolve().parent / "published"
"""The papers' data files (one TOML per paper; format in docs/studies.md, "Reproduce a paper")."""


def parse_args(argv=None, papers=None):
    papers = papers or load_papers(str(PUBLISHED))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--paper", required=True, choices=sorted(papers), help="whose table to reproduce")
    p.add_argument("--data", required=True, help="mmsa:/path/to/aligned_50.pkl or merbench:/dir[?options]")
    p.add_argument("--corpus", default=None, help="which of the paper's corpora the data is (default: the one "
                   "the source path names, else the only one its shape fits)")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="run on a synthetic: source (tries the protocol; the numbers are not comparable)")
    p.add_argument("--name", default=None, help="comparison name in the store (default reproduce-<paper>-<data>)")
    add_comparison_flags(p, "train seeds (the papers average 5 runs)",
                         "2 train seeds x 1 epoch, 200 resamples: checks the pipeline, not the paper")
    args = p.parse_args(argv)
    apply_comparison_smoke_test(args)
    return args


def main(argv=None):
    from affectune.data import DatasetError, load

    papers = load_papers(str(PUBLISHED))
    args = parse_args(argv, papers)
    paper = papers[args.paper]
    try:
        dataset = load(args.data)
        requirement, published = paper.select(dataset, args.corpus, args.allow_synthetic)
        spec = reproduction_spec(args, paper, dataset.source, requirement.corpus)
        result = run_comparison(spec, address=args.address, overwrite=args.overwrite, local=args.local,
                                dataset=dataset)
    except (DatasetError, ShapeMismatch, KeyError, ValueError, ComparisonExists) as exc:
        raise SystemExit(f"error: {exc.args[0] if exc.args else exc}") from None
    header = provenance(args, paper, requirement, spec)
    print("\n" + header + "\n", flush=True)
    frame = side_by_side(result.tables, published, paper.method) if published else None
    if frame is not None:
        print(format_side_by_side(frame), flush=True)
    else:
        print(f"{paper.paper}: no published numbers to compare against: {paper.no_numbers}.\n", flush=True)
    # the terminal gets the paper's metrics (else the primary one); --out files hold every metric
    shown = list(dict.fromkeys(frame["metric"])) if frame is not None else [PRIMARY_METRIC[result.task]]
    print(format_markdown(result.tables, result.significance, f"ours: {paper.method} on {spec.dataset}",
                          metrics=shown), flush=True)
    if args.out:
        paths = export(result.tables, result.significance, args.out, spec.name, header)
        paths += export_side_by_side(frame, args.out, spec.name, header) if frame is not None else []
        print("wrote " + ", ".join(paths), flush=True)
    print(f"comparison {spec.name!r} in store {args.storage}: affectune.store.open_store(...)"
          f".comparison_tables({spec.name!r})", flush=True)
    return result


def reproduction_spec(args, paper, source: str, corpus: str) -> ComparisonSpec:
    """The paper's method with its `paper` preset for `corpus` (a method whose paper set it per corpus
    picks by that name; refused if it has none), the budget flags given, over the train seeds; named
    reproduce-<paper>-<source>."""
    from affectune.models import model_class

    try:  # resolve_configs would fall back to the study defaults: a reproduction must not
        model_class(paper.method).preset("paper", corpus)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{paper.method} has no usable 'paper' preset for {corpus}: {exc.args[0]}") from None
    starts, sources = resolve_configs([paper.method], corpus, preset="paper", log=lambda _: None)
    if args.eval_splits and "test" not in args.eval_splits:
        raise ValueError(f"--eval-splits {','.join(args.eval_splits)}: the papers' numbers are on the test split; "
                         "include test")
    name = args.name or default_name(source).replace("compare-", f"reproduce-{args.paper}-", 1)
    return ComparisonSpec(name=name + ("-smoke" if args.smoke_test and not args.name else ""), dataset=source,
                          configs={paper.method: apply_base_flags(paper.method, starts[paper.method], args)},
                          sources=sources, train_seeds=args.train_seeds, mask_seeds=args.mask_seeds,
                          eval_splits=args.eval_splits, n_boot=args.n_boot, run=comparison_run_settings(args))


def provenance(args, paper, requirement, spec: ComparisonSpec) -> str:
    """Which numbers are ours and how they were made (printed above the tables and in the exports)."""
    changed = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("epochs", "batch_size", "lr", "patience",
                                                                        "hidden") if getattr(args, k) is not None]
    changed += [f"--set {s}" for s in args.set]
    return "\n".join([
        f"### {paper.paper} ({paper.citation}) reproduced on {spec.dataset}",
        f"Data: {requirement.describe()} (the paper's shape: {requirement.section}).",
        f"Published numbers: studies/published/{args.paper}.toml, copied from {paper.text}.",
        f"Ours: {paper.method} with its 'paper' preset" + (f", changed by {', '.join(changed)}" if changed else "")
        + f"; every number is from the checkpoint selected on the validation split (per train seed), evaluated "
        f"on the test split; mean ± std over {len(spec.train_seeds)} train seeds {list(spec.train_seeds)}, "
        f"mask seeds {list(spec.mask_seeds)}.",
        "Numbers on small fixtures, synthetic data or a changed budget are not comparable with the paper's."])


if __name__ == "__main__":
    main()
    sys.exit(0)
