"""Compare every registered method on one dataset: retrained over seeds, same grid, tables with significance.

    python studies/compare_methods.py --smoke-test                    # every method, 2 seeds x 1 epoch, tiny MOSI
    python studies/compare_methods.py --dataset synthetic:iemocap     # paper presets, 5 seeds
    python studies/compare_methods.py --dataset synthetic:mosi,synthetic:iemocap   # one comparison each
    python studies/compare_methods.py --methods dqf,umdf --from-studies dqf-search,umdf-search
    python studies/compare_methods.py --preset none --epochs 4 --out results/tables   # the study defaults
    python studies/compare_methods.py --address auto --gpus-per-worker 1 --storage s3://bucket/affectune

Each method starts from the config a named study selected on validation (`--from-studies`), else
its `--preset` (paper by default; a method without one uses its study defaults, and says so);
budget flags (--epochs, --batch-size, ...) then apply to every method. The comparison is written to
the store (comparison tables, see docs/studies.md) and the dashboard's Methods page reads it.
"""

import argparse
import sys

from affectune.metrics import PRIMARY_METRIC

from affectune.compare import ComparisonExists, ComparisonSpec, default_name, export, format_markdown, \
    resolve_configs, run_comparison
from affectune.studies.cli import _dataset_source, add_comparison_flags, add_dataset_flags, apply_base_flags, \
    apply_comparison_smoke_test, comparison_run_settings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", default=None, help="comparison name (default compare-<dataset>; one dataset only)")
    add_dataset_flags(p, {"dataset": "synthetic:mosi", "synthetic_scale": 0.25})
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    p.add_argument("--from-studies", default="", help="comma-separated studies in the store: each gives its "
                   "method's config (the trial it selected on validation)")
    p.add_argument("--preset", default="paper", help="the other methods' named preset; 'none': their study defaults")
    add_comparison_flags(p, "train seeds of every method",
                         "every method, 2 train seeds x 1 epoch on 5%% of a synthetic preset, 200 resamples")
    args = p.parse_args(argv)
    apply_comparison_smoke_test(args)
    if args.smoke_test and args.scale is None and args.samples is None:
        args.synthetic_scale = 0.05
    return args


def main(argv=None):
    """One comparison per dataset of `--dataset` (comma-separated: one command for several)."""
    from affectune.models import list_models

    args = parse_args(argv)
    methods = args.methods.split(",") if args.methods else list_models()
    datasets = [d for d in args.dataset.split(",") if d]
    if args.name and len(datasets) > 1:
        raise SystemExit("error: --name names one comparison; leave it out with several datasets")
    results = []
    for source in datasets:
        args.dataset = source
        results.append(compare_one(args, _dataset_source(args), methods))
    return results


def compare_one(args, dataset: str, methods: list[str]):
    from affectune.store import open_store

    studies = [s for s in args.from_studies.split(",") if s]
    try:
        starts, sources = resolve_configs(methods, dataset, store=open_store(args.storage), from_studies=studies,
                                          preset=None if args.preset == "none" else args.preset)
        configs = {m: apply_base_flags(m, start, args) for m, start in starts.items()}
        spec = ComparisonSpec(
            name=args.name or default_name(dataset) + ("-smoke" if args.smoke_test else ""), dataset=dataset,
            configs=configs, sources=sources, train_seeds=args.train_seeds, mask_seeds=args.mask_seeds,
            eval_splits=args.eval_splits, n_boot=args.n_boot,
            run=comparison_run_settings(args))
        result = run_comparison(spec, address=args.address, overwrite=args.overwrite, local=args.local)
    except (KeyError, ValueError, ComparisonExists) as exc:
        raise SystemExit(f"error: {exc.args[0] if exc.args else exc}") from None
    title = f"{dataset}: {len(methods)} methods x {len(spec.train_seeds)} train seeds"
    # the terminal gets the primary metric; the store and --out files hold every metric of TABLE_METRICS
    print("\n" + format_markdown(result.tables, result.significance, title,
                                 metrics=[PRIMARY_METRIC[result.task]]), flush=True)
    if args.out:
        print("wrote " + ", ".join(export(result.tables, result.significance, args.out, spec.name, title)))
    print(f"comparison {spec.name!r} in store {args.storage} ({result.wall_s:.0f} s): "
          f"affectune.store.open_store(...).comparison_tables({spec.name!r})", flush=True)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
