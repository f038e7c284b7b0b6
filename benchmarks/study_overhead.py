"""Study benchmarks: per-trial overhead of the platform, and search efficiency on DQF's layer/head grid.

(a) Overhead: the same trials (same configs, data, epochs) run three ways on one local Ray:
    plain    a bare Tune function trainable calling train_loop with tune.report (the floor);
    platform the study runner in its default mode for 1-worker CPU trials ("in_process": the loop
             runs inside the Tune trial, plus the store rows, checkpoint persistence, Optuna);
    train    the study runner with a TorchTrainer per trial (Ray Train; what multi-worker/GPU
             trials use).
    Reported: search wall time per trial, the overhead per trial against plain, and the ratios.
(b) Search efficiency: TPE + ASHA over the 9-point DQF grid (layers x heads in {2,4,6}, space "grid") against
    training the full grid, as best validation objective reached vs epochs spent.

    python -m benchmarks.study_overhead [--trials 3] [--epochs 2] [--grid-epochs 3]
Needs Ray; run it under `flock /tmp/affectune-ray.lock` on a shared machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time

DATASET = "synthetic:mosi?scale=0.05"


def _base(epochs: int) -> dict:
    return {"epochs": epochs, "batch_size": 32, "patience": epochs + 1, "num_threads": 1,
            "model_config": {"hidden": 12, "layers": 1, "heads": 2}}


def plain_tune(num_trials: int, epochs: int, storage: str) -> float:
    """Wall seconds of `num_trials` bare Tune trials doing the same training (one at a time)."""
    import ray
    from ray import tune

    from affectune.data import load
    from affectune.train import train_loop

    ref = ray.put(load(DATASET))
    config = {**_base(epochs), "model": "dqf", "dataset": DATASET}

    def trainable(params, ref_box):
        train_loop({**config, "seed": params["seed"]}, lambda m, _d: tune.report(m), dataset=ray.get(ref_box[0]))

    tuner = tune.Tuner(tune.with_parameters(trainable, ref_box=[ref]),
                       param_space={"seed": tune.grid_search(list(range(num_trials)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="plain", storage_path=storage, verbose=0))
    started = time.time()
    tuner.fit()
    return time.time() - started


def _seed_space(num_trials: int, trial) -> None:
    """Same configs as the plain runs: the seed is the only dimension (module-level: Tune pickles it)."""
    trial.suggest_int("seed", low=0, high=num_trials - 1)


def platform_study(num_trials: int, epochs: int, storage: str, execution: str, name: str,
                   max_concurrent: int = 1) -> tuple[float, object]:
    """Search wall seconds of the study runner on the same work (seed varies like plain's grid);
    benchmarks/scaling.py reuses it for wall time against trial count at fixed concurrency."""
    from affectune.studies import StudySpec, run_study

    spec = StudySpec(name=name, method="dqf", dataset=DATASET, search_space=functools.partial(_seed_space, num_trials), base_config=_base(epochs),
                     num_trials=num_trials, max_concurrent=max_concurrent, use_asha=False, execution=execution,
                     storage=storage, train_seeds=(0,), mask_seeds=(0,), verbose=0)
    result = run_study(spec)
    return result.search_wall_s, result


def overhead(num_trials: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="affectune-bench-") as tmp:
        plain = plain_tune(num_trials, epochs, os.path.join(tmp, "plain"))
        inproc, res = platform_study(num_trials, epochs, os.path.join(tmp, "store"), "in_process", "bench-inproc")
        train, res_t = platform_study(num_trials, epochs, os.path.join(tmp, "store"), "train", "bench-train")
        train_time = float(res.trials["wall_time_s"].mean())
    per = {k: v / num_trials for k, v in (("plain", plain), ("in_process", inproc), ("train", train))}
    out = {"trials": num_trials, "epochs": epochs, "trial_train_wall_s": train_time,
           "per_trial_s": per,
           "overhead_vs_plain_s": {k: per[k] - per["plain"] for k in ("in_process", "train")},
           "ratio_vs_plain": {k: per[k] / per["plain"] for k in ("in_process", "train")}}
    print(f"(a) per-trial wall time over {num_trials} sequential trials of {epochs} epoch(s) "
          f"(train_loop itself: {train_time:.1f} s/trial)")
    for k in ("plain", "in_process", "train"):
        extra = "" if k == "plain" else (f"  overhead {out['overhead_vs_plain_s'][k]:+.1f} s/trial, "
                                         f"ratio {out['ratio_vs_plain'][k]:.2f}x plain")
        print(f"    {k:<11} {per[k]:6.1f} s/trial{extra}")
    return out


def search_efficiency(grid_epochs: int, study_trials: int) -> dict:
    """Best validation objective and epochs spent: TPE+ASHA study vs the full 9-point grid."""
    from affectune.data import load
    from affectune.search_spaces import apply_params, draw, get_space
    from affectune.studies import StudySpec, run_study
    from affectune.train import train_loop

    space = get_space("dqf", "grid")  # the 3 x 3 layers x heads grid the figures in docs/studies.md were measured on
    base = {**_base(grid_epochs), "model_config": {"hidden": 12}}
    dataset = load(DATASET)
    grid_best, grid_epochs_spent, direction = None, 0, None
    started = time.time()
    for point in space.grid:
        cfg = {**apply_params("dqf", draw(space, point), base, space.helpers), "dataset": DATASET}
        outcome = train_loop(cfg, dataset=dataset)
        direction = "min" if outcome.select_metric.endswith(("mae",)) else "max"
        grid_epochs_spent += outcome.epochs_run
        better = grid_best is None or (outcome.best_objective < grid_best if direction == "min"
                                       else outcome.best_objective > grid_best)
        grid_best = outcome.best_objective if better else grid_best
    grid_wall = time.time() - started
    with tempfile.TemporaryDirectory(prefix="affectune-bench-") as tmp:
        spec = StudySpec(name="bench-search", method="dqf", dataset=DATASET, search_space="grid", base_config=base,
                         num_trials=study_trials, max_concurrent=2, grace_period=1, reduction_factor=2,
                         storage=tmp, train_seeds=(0,), mask_seeds=(0,), verbose=0)
        result = run_study(spec)
    trials = result.trials
    study_best = float(trials["best_objective"].min() if direction == "min" else trials["best_objective"].max())
    study_epochs = int(trials["epochs_run"].sum())
    out = {"grid_best": grid_best, "grid_epochs": grid_epochs_spent, "grid_wall_s": grid_wall,
           "study_best": study_best, "study_epochs": study_epochs, "study_wall_s": result.search_wall_s,
           "distinct_configs": int(trials["params"].nunique()), "direction": direction,
           "epochs_ratio": study_epochs / grid_epochs_spent}
    print(f"(b) DQF paper grid (layers x heads), {grid_epochs} epochs max, objective {direction}:")
    print(f"    full grid   best {grid_best:.4f} after {grid_epochs_spent} epochs ({grid_wall:.0f} s, sequential)")
    print(f"    TPE+ASHA    best {study_best:.4f} after {study_epochs} epochs ({result.search_wall_s:.0f} s, "
          f"{study_trials} trials, {out['distinct_configs']} distinct configs)")
    print(f"    epochs ratio {out['epochs_ratio']:.2f}, best-score gap {study_best - grid_best:+.4f}")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--grid-epochs", type=int, default=3)
    parser.add_argument("--study-trials", type=int, default=6)
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from affectune.studies import init_ray

    own = not ray.is_initialized()
    init_ray(None, num_cpus=2, log_to_driver=False) if own else None
    try:
        results = {"overhead": overhead(args.trials, args.epochs)}
        if not args.skip_search:
            results["search"] = search_efficiency(args.grid_epochs, args.study_trials)
    finally:
        if own:
            ray.shutdown()
    print(json.dumps(results, default=float))
    return results


if __name__ == "__main__":
    main()
