"""The command line every study script shares: flags -> StudySpec -> run_study -> printed summary."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from affectune.studies.spec import COLD_START_TIMEOUT_S, StudySpec

REPO_RESULTS = str(Path(__file__).resolve().parents[3] / "results")
"""Default store root without AFFECTUNE_STORAGE: results/ in the repository (git-ignored)."""
STORAGE_ENV = "AFFECTUNE_STORAGE"
"""Environment variable naming the default store root (cluster.yaml sets it on every node)."""


def default_storage() -> str:
    """$AFFECTUNE_STORAGE when set (and not empty), else the repository's results/."""
    return os.environ.get(STORAGE_ENV) or REPO_RESULTS


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


SCRIPT_DEFAULTS = {"trials": 6, "concurrent": 2, "train_seeds": (0, 1), "mask_seeds": (0, 1, 2)}
"""Study-run defaults a script may change through `defaults=` (budget and seeds, not the model's)."""

BASE_FLAGS = ("epochs", "batch_size", "lr", "patience", "hidden")
"""Flags that override the method's base train config when given (default: the method's own)."""


def build_parser(method: str, description: str, defaults: dict | None = None) -> argparse.ArgumentParser:
    """The flags of a study script of `method`: `--space` choices are the method's registered spaces,
    `--preset` its named presets; the base config comes from the method (see `base_config_from_args`)."""
    from affectune.models import model_class
    from affectune.search_spaces import list_spaces

    d = {**SCRIPT_DEFAULTS, **(defaults or {})}
    spaces = [name for _, name in list_spaces(method)]
    if not spaces:
        raise SystemExit(f"method {method!r} registers no search space (affectune.search_spaces.register_space)")
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", default=d.get("name", f"{method}-search"), help="study name (store partition)")
    add_dataset_flags(p, d)
    p.add_argument("--space", choices=spaces, default=d.get("space", "paper" if "paper" in spaces else spaces[0]),
                   help="search space (registered in the method's model file)")
    p.add_argument("--preset", choices=sorted(model_class(method).presets) or None, default=None,
                   help="start from the method's named train config (e.g. paper) instead of its study defaults")
    add_base_flags(p)
    p.add_argument("--trials", type=int, default=d["trials"], help="trials the searcher proposes")
    p.add_argument("--concurrent", type=int, default=d["concurrent"], help="trials at the same time")
    p.add_argument("--objective", action="append", default=None, metavar="METRIC[:MODE]",
                   help="validation objective(s); repeat for multi-objective (default: the loop's selection)")
    p.add_argument("--grace-period", type=int, default=None, metavar="EPOCHS",
                   help="ASHA: epochs every trial runs before it may be stopped early (default: half "
                        "of --epochs, at least 2; see docs/studies.md)")
    p.add_argument("--plateau-tol", type=float, default=None, metavar="FRACTION",
                   help="ASHA: compare a trial at a rung only once it (or an earlier trial there) improved on "
                        "its first epoch's objective by this fraction (default: off; see docs/studies.md)")
    p.add_argument("--tpe-startup-trials", type=int, default=None, metavar="N",
                   help="TPE: random trials before it models the space (default: a quarter of --trials, "
                        "2 to 10)")
    _add_evaluation_flags(p, d)
    p.add_argument("--seed", type=int, default=0)
    _add_ray_flags(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted study of the same name")
    p.add_argument("--smoke-test", action="store_true",
                   help="3 trials x 1 epoch (tiny dataset when synthetic): exercises Train, Tune, Optuna, "
                        "the grid and the store")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--verbose", action="store_true", help="also Ray Tune's own output (banner, tables, hints)")
    return p


def add_dataset_flags(p: argparse.ArgumentParser, d: dict) -> None:
    """--dataset, --scale, --samples (read back with `_dataset_source(args)`)."""
    p.add_argument("--dataset", default=d.get("dataset", "synthetic:mosi"),
                   help="synthetic preset (synthetic:mosi|mosei|iemocap|meld[?opts]) or mmsa:/path, merbench:/dir")
    p.add_argument("--scale", type=float, default=None,
                   help=f"synthetic only: dataset size as a fraction of the preset (adds ?scale=; "
                        f"default {d.get('synthetic_scale', 1.0):g} for synthetic sources)")
    p.add_argument("--samples", type=int, default=None,
                   help="synthetic only: about this many train+valid+test samples (sets scale)")
    p.set_defaults(synthetic_scale=d.get("synthetic_scale"))


def add_base_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override the method's base train config (read back with `apply_base_flags`)."""
    p.add_argument("--epochs", type=int, default=None, help="max epochs per trial (default: the method's)")
    p.add_argument("--patience", type=int, default=None,
                   help="epochs without improvement before a trial stops early (default: the method's; "
                        "--set patience=null never stops early)")
    p.add_argument("--hidden", type=int, default=None, help="model hidden size (default: the method's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the method's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any train or model config field of the base config (JSON value); repeatable")


def _add_ray_flags(p: argparse.ArgumentParser) -> None:
    """Where and how trials run: Ray Train scaling, the store, the cluster."""
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--worker-resources", type=_json_dict, default={},
                   help='custom Ray resources per worker as JSON, e.g. \'{"node2": 1}\'')
    p.add_argument("--execution", choices=("auto", "train", "in_process"), default="auto",
                   help="auto: in_process for 1-worker CPU trials, Ray Train otherwise")
    p.add_argument("--storage", default=default_storage(),
                   help=f"study store root (local dir or s3://...); default ${STORAGE_ENV} when set")
    p.add_argument("--shared-storage", action="store_true",
                   help="the local --storage path is mounted on every node (NFS, EFS): allow it on a cluster")
    p.add_argument("--ray-storage", default=None, help="Tune storage_path (default STORAGE/ray)")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default: local Ray")
    p.add_argument("--worker-start-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long a trial waits for its Ray Train workers to be placed (cold GPU nodes); "
                        f"default {COLD_START_TIMEOUT_S:g} with --address, Ray's 60 without")


def add_comparison_flags(p: argparse.ArgumentParser, seeds_help: str, smoke_help: str) -> None:
    """The flags of a comparison script (compare_methods.py, reproduce.py): the base flags, train seeds
    (5 by default) and mask seeds, --n-boot, --concurrent, the Ray flags, --local, --overwrite, --out,
    --quiet, --verbose and --smoke-test (applied by `apply_comparison_smoke_test`)."""
    add_base_flags(p)
    add_grid_flags(p, {"train_seeds": (0, 1, 2, 3, 4), "mask_seeds": (0,)}, seeds_help)
    p.add_argument("--smoke-test", action="store_true", help=smoke_help)
    p.add_argument("--n-boot", type=int, default=1000, help="paired-bootstrap resamples of the test samples")
    p.add_argument("--concurrent", type=int, default=2, help="(method, seed) jobs at the same time")
    _add_ray_flags(p)
    p.add_argument("--local", action="store_true",
                   help="no Ray: the (method, seed) jobs in --concurrent processes of this machine (small machines)")
    p.add_argument("--overwrite", action="store_true", help="replace a comparison of the same name")
    p.add_argument("--out", default=None, help="also write Markdown, CSV and LaTeX (booktabs) tables here")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--verbose", action="store_true", help="also Ray Tune's own output")


def apply_comparison_smoke_test(args) -> None:
    """--smoke-test of a comparison: 1 epoch, the first 2 train seeds, 200 bootstrap resamples."""
    if args.smoke_test:
        args.epochs, args.train_seeds, args.n_boot = 1, args.train_seeds[:2], 200


def comparison_run_settings(args) -> dict:
    """ComparisonSpec.run from the flags of `add_comparison_flags`."""
    return {"max_concurrent": args.concurrent, "workers_per_trial": args.workers_per_trial,
            "gpus_per_worker": args.gpus_per_worker, "cpus_per_worker": args.cpus_per_worker,
            "resources_per_worker": args.worker_resources, "execution": args.execution,
            "storage": args.storage, "ray_storage_path": args.ray_storage, "shared_storage": args.shared_storage,
            "worker_start_timeout_s": _worker_start_timeout(args),
            "verbose": 2 if args.verbose else 0 if args.quiet else 1}


def _add_evaluation_flags(p: argparse.ArgumentParser, d: dict) -> None:
    """Selection and final-evaluation flags (`--eval-seeds` is the old spelling of `--train-seeds`)."""
    from affectune.train_cli import DeprecatedAlias

    p.add_argument("--top-k", type=int, default=1, help="configs selected on validation (single objective)")
    add_grid_flags(p, d, "train seeds of the final evaluation of the selected configs")
    p.add_argument("--eval-seeds", type=_seeds, dest="train_seeds", action=DeprecatedAlias, new="--train-seeds",
                   help=argparse.SUPPRESS)


def add_grid_flags(p: argparse.ArgumentParser, d: dict, train_seeds_help: str) -> None:
    """--train-seeds, --mask-seeds, --eval-splits: the seeds and splits of a final evaluation."""
    p.add_argument("--train-seeds", type=_seeds, default=d["train_seeds"], help=train_seeds_help)
    p.add_argument("--mask-seeds", type=_seeds, default=d["mask_seeds"], help="mask seeds of the test grid")
    p.add_argument("--eval-splits", type=_splits, default=None,
                   help="splits of the final robustness grid (default: test, plus ood when the dataset has it)")


def _splits(text: str) -> tuple[str, ...]:
    splits = tuple(s.strip() for s in text.split(",") if s.strip())
    if not splits:
        raise argparse.ArgumentTypeError(f"expected comma-separated split names, got {text!r}")
    return splits


def _dataset_source(args) -> str:
    """`--dataset` with `--scale`/`--samples` (or the script's default scale, synthetic sources only)."""
    source = args.dataset
    synthetic = source.startswith("synthetic:")
    if (args.scale is not None or args.samples is not None) and not synthetic:
        raise SystemExit(f"--scale/--samples apply to synthetic datasets only, not {source!r}")
    scale = args.scale
    if args.samples is not None:
        from affectune.data.synthetic import PRESETS

        preset = source.split(":", 1)[1].split("?", 1)[0]
        if preset not in PRESETS:
            raise SystemExit(f"--samples: unknown synthetic preset {preset!r} (have {sorted(PRESETS)})")
        scale = min(4.0, args.samples / sum(PRESETS[preset].sizes))
    elif scale is None and synthetic and "scale=" not in source:
        scale = args.synthetic_scale  # the script's default size, for synthetic sources only
    if scale is None:
        return source
    return source + ("&" if "?" in source else "?") + f"scale={scale:.4g}"


def base_config_from_args(method: str, args) -> dict:
    """The trials' base train config: the method's `study_defaults` (or `--preset NAME`), then the
    flags given (`--epochs`, `--lr`, ...), then `--set` pairs; routed by `route_overrides`."""
    from affectune.models import model_class

    cls = model_class(method)
    try:
        start = cls.preset(args.preset, args.dataset) if args.preset else cls.study_defaults
        return apply_base_flags(method, start, args)
    except KeyError as e:
        raise SystemExit(f"error: {e.args[0]}") from None


def apply_base_flags(method: str, start: dict, args) -> dict:
    """`start` (a partial train config) routed, then the base flags given, then `--set` pairs."""
    from affectune.search_spaces import route_overrides
    from affectune.train_cli import parse_value

    flags = {k: getattr(args, k) for k in BASE_FLAGS if getattr(args, k) is not None}
    pairs = dict(item.partition("=")[::2] for item in args.set)
    config = route_overrides(method, route_overrides(method, {}, start), flags)
    return route_overrides(method, config, {k.strip(): parse_value(v) for k, v in pairs.items()})


def _apply_smoke_test(method: str, args) -> None:
    """--smoke-test: 3 trials x 1 epoch, one train and one mask seed, 5% of a synthetic preset."""
    args.trials, args.epochs = min(args.trials, 3), 1
    args.train_seeds, args.mask_seeds = (args.seed,), (0,)
    if args.scale is None and args.samples is None:
        args.synthetic_scale = 0.05  # ignored for file sources
    if args.name == f"{method}-search":
        args.name = f"{method}-smoke"
    if args.execution == "auto":  # the smoke test exists to exercise Ray Train, so never skip it
        args.execution = "train"


def spec_from_args(method: str, args) -> StudySpec:
    if args.smoke_test:
        _apply_smoke_test(method, args)
    objectives = []
    for text in args.objective or ["objective"]:
        metric, _, mode = text.partition(":")
        objectives.append((metric, mode or None))
    extra = {"eval_splits": args.eval_splits} if args.eval_splits else {}
    return StudySpec(
        name=args.name, method=method, dataset=_dataset_source(args), search_space=args.space,
        base_config=base_config_from_args(method, args),
        num_trials=args.trials, max_concurrent=args.concurrent, objectives=tuple(objectives),
        grace_period=args.grace_period, plateau_tol=args.plateau_tol, tpe_startup_trials=args.tpe_startup_trials,
        workers_per_trial=args.workers_per_trial, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, resources_per_worker=args.worker_resources,
        execution=args.execution, storage=args.storage, ray_storage_path=args.ray_storage,
        shared_storage=args.shared_storage, worker_start_timeout_s=_worker_start_timeout(args),
        top_k=args.top_k, train_seeds=args.train_seeds, mask_seeds=args.mask_seeds, seed=args.seed,
        verbose=2 if args.verbose else 0 if args.quiet else 1, **extra,
    )


def _worker_start_timeout(args) -> float | None:
    """--worker-start-timeout, else COLD_START_TIMEOUT_S on a cluster (--address), else Ray's default."""
    if args.worker_start_timeout is not None:
        return args.worker_start_timeout
    return COLD_START_TIMEOUT_S if args.address else None


def format_result(result, spec: StudySpec) -> str:
    """The end-of-study summary: best config, its validation scores, its AUILC table, where results are."""
    from affectune.evaluate import format_auilc_table

    trials = result.trials
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    lines = [f"\n=== study {spec.name}: {len(trials)} trials "
             f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); search {result.search_wall_s:.0f} s, "
             f"final evaluation {result.eval_wall_s:.0f} s"]
    if not result.selected:
        lines.append("no trial finished with a finite validation objective: nothing selected")
    for trial_id in result.selected:
        row = trials.set_index("trial_id").loc[trial_id]
        lines.append(f"\nselected trial {trial_id} (validation only), params {row['params']}")
        stats = result.eval_validation.get(trial_id, {})
        shown = [k for k in stats if k.startswith("valmask_")] + [k for k in stats if k.startswith("val_")]
        if stats:
            n = len(spec.train_seeds)
            lines.append(f"validation over {n} train seed(s): " + ", ".join(
                f"{k}={m:.4f}" + (f"±{s:.4f}" if math.isfinite(s) else "") for k, (m, s) in
                ((k, stats[k]) for k in shown)))
        part = result.summary[result.summary["trial_id"] == trial_id] if len(result.summary) else None
        if part is not None and len(part):
            lines.append(format_auilc_table(part.drop(columns=["trial_id"])))
    lines.append(f"\nresults: store {os.path.abspath(spec.storage) if '://' not in spec.storage else spec.storage} "
                 f"(affectune.store.open_store(...).trials({spec.name!r})), Tune runs {result.tune_path}")
    return "\n".join(lines)


def study_main(method: str, description: str, argv=None, defaults: dict | None = None):
    """Parse flags, run the study, print the summary; returns the StudyResult.

    `defaults` may set the script's name, dataset, synthetic_scale, space, trials, concurrent,
    train_seeds and mask_seeds; the base train config is the method's (`study_defaults`)."""
    from affectune.studies.runner import StudyExists, run_study
    from affectune.studies.spec import StoreNotShared

    args = build_parser(method, description, defaults).parse_args(argv)
    try:
        spec = spec_from_args(method, args)
    except ValueError as exc:  # StudySpec's checks name the flag's field and what to do
        raise SystemExit(f"error: {exc}") from None
    try:
        result = run_study(spec, address=args.address, resume=args.resume)
    except (StudyExists, StoreNotShared) as exc:
        raise SystemExit(f"error: {exc}") from None
    if result.interrupted:
        print(f"interrupted: run again with --resume --name {spec.name} to finish the study", flush=True)
    else:
        print(format_result(result, spec), flush=True)
    return result
