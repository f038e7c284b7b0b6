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


def build_parser(method: str, spaces: list[str], description: str, defaults: dict) -> argparse.ArgumentParser:
    d = defaults
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", default=d.get("name", f"{method}-search"), help="study name (store partition)")
    p.add_argument("--dataset", default=d.get("dataset", "synthetic:mosi"),
                   help="synthetic preset (synthetic:mosi|mosei|iemocap|meld[?opts]) or mmsa:/path, merbench:/dir")
    p.add_argument("--scale", type=float, default=d.get("scale"),
                   help="synthetic only: dataset size as a fraction of the preset (adds ?scale=)")
    p.add_argument("--samples", type=int, default=None,
                   help="synthetic only: about this many train+valid+test samples (sets scale)")
    p.add_argument("--space", choices=spaces, default=d.get("space", spaces[0]), help="search space")
    p.add_argument("--epochs", type=int, default=d.get("epochs", 4), help="max epochs per trial")
    p.add_argument("--trials", type=int, default=d.get("trials", 6), help="trials the searcher proposes")
    p.add_argument("--concurrent", type=int, default=d.get("concurrent", 2), help="trials at the same time")
    p.add_argument("--hidden", type=int, default=d.get("hidden", 24), help="model hidden size (base config)")
    p.add_argument("--batch-size", type=int, default=d.get("batch_size", 32))
    p.add_argument("--lr", type=float, default=d.get("lr", 2e-3), help="learning rate (base config)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--worker-resources", type=_json_dict, default={},
                   help='custom Ray resources per worker as JSON, e.g. \'{"node2": 1}\'')
    p.add_argument("--execution", choices=("auto", "train", "in_process"), default="auto",
                   help="auto: in_process for 1-worker CPU trials, Ray Train otherwise")
    p.add_argument("--objective", action="append", default=None, metavar="METRIC[:MODE]",
                   help="validation objective(s); repeat for multi-objective (default: the loop's selection)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--eval-seeds", type=_seeds, default=d.get("eval_seeds", (0, 1)),
                   help="train seeds of the final evaluation of the selected configs")
    p.add_argument("--mask-seeds", type=_seeds, default=d.get("mask_seeds", (0, 1, 2)),
                   help="mask seeds of the test grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", default=default_storage(),
                   help=f"study store root (local dir or s3://...); default ${STORAGE_ENV} when set")
    p.add_argument("--shared-storage", action="store_true",
                   help="the local --storage path is mounted on every node (NFS, EFS): allow it on a cluster")
    p.add_argument("--ray-storage", default=None, help="Tune storage_path (default STORAGE/ray)")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default: local Ray")
    p.add_argument("--worker-start-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long a trial waits for its Ray Train workers to be placed (cold GPU nodes); "
                        f"default {COLD_START_TIMEOUT_S:g} with --address, Ray's 60 without")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study of the same name")
    p.add_argument("--smoke-test", action="store_true",
                   help="3 trials x 1 epoch on a tiny dataset: exercises Train, Tune, Optuna, the grid and the store")
    p.add_argument("--quiet", action="store_true", help="no Tune progress table")
    return p


def _dataset_source(args) -> str:
    source = args.dataset
    extra = []
    if args.scale is not None and args.samples is None:
        extra.append(f"scale={args.scale:g}")
    if args.samples is not None:
        from affectune.data.synthetic import PRESETS

        preset = source.split(":", 1)[1].split("?", 1)[0]
        if preset not in PRESETS:
            raise SystemExit(f"--samples: unknown synthetic preset {preset!r} (have {sorted(PRESETS)})")
        extra.append(f"scale={min(4.0, args.samples / sum(PRESETS[preset].sizes)):.4g}")
    if extra:
        if not source.startswith("synthetic:"):
            raise SystemExit("--scale/--samples apply to synthetic datasets only")
        source += ("&" if "?" in source else "?") + "&".join(extra)
    return source


def spec_from_args(method: str, args) -> StudySpec:
    if args.smoke_test:
        args.trials, args.epochs, args.eval_seeds = min(args.trials, 3), 1, (args.seed,)
        args.mask_seeds = (0,)
        if args.scale is None and args.samples is None and args.dataset.startswith("synthetic:"):
            args.scale = 0.05
        if args.name == f"{method}-search":
            args.name = f"{method}-smoke"
        if args.execution == "auto":  # the smoke test exists to exercise Ray Train, so never skip it
            args.execution = "train"
    objectives = []
    for text in args.objective or ["objective"]:
        metric, _, mode = text.partition(":")
        objectives.append((metric, mode or None))
    return StudySpec(
        name=args.name, method=method, dataset=_dataset_source(args), search_space=args.space,
        base_config={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                     "model_config": {"hidden": args.hidden}, "patience": max(2, args.epochs)},
        num_trials=args.trials, max_concurrent=args.concurrent, objectives=tuple(objectives),
        workers_per_trial=args.workers_per_trial, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, resources_per_worker=args.worker_resources,
        execution=args.execution, storage=args.storage, ray_storage_path=args.ray_storage,
        shared_storage=args.shared_storage, worker_start_timeout_s=_worker_start_timeout(args),
        top_k=args.top_k, eval_seeds=args.eval_seeds, mask_seeds=args.mask_seeds, seed=args.seed,
        verbose=0 if args.quiet else 1,
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
            n = len(spec.eval_seeds)
            lines.append(f"validation over {n} train seed(s): " + ", ".join(
                f"{k}={m:.4f}" + (f"±{s:.4f}" if math.isfinite(s) else "") for k, (m, s) in
                ((k, stats[k]) for k in shown)))
        part = result.summary[result.summary["trial_id"] == trial_id] if len(result.summary) else None
        if part is not None and len(part):
            lines.append(format_auilc_table(part.drop(columns=["trial_id"])))
    lines.append(f"\nresults: store {os.path.abspath(spec.storage) if '://' not in spec.storage else spec.storage} "
                 f"(affectune.store.open_store(...).trials({spec.name!r})), Tune runs {result.tune_path}")
    return "\n".join(lines)


def study_main(method: str, spaces: list[str], description: str, argv=None, defaults: dict | None = None):
    """Parse flags, run the study, print the summary; returns the StudyResult."""
    from affectune.studies.runner import StudyExists, run_study
    from affectune.studies.spec import StoreNotShared

    args = build_parser(method, spaces, description, defaults or {}).parse_args(argv)
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
