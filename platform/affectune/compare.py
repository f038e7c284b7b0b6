"""Compare methods on one protocol: every method retrained over the same train seeds, evaluated on
the same test grid and inter-modality conditions, with seed bands and significance against the best.

    spec = ComparisonSpec(name="cmp-mosi", dataset="synthetic:mosi", configs={"<model a>": {...}, "<model b>": {...}})
    result = run_comparison(spec)
    print(format_markdown(result.tables, result.significance))

Steps (the (method, seed) jobs run in parallel on Ray, the way a study's final evaluation does):
1. train: one Tune grid over (method, train seed); each entry is a study trial in its "eval" phase
   (`affectune.studies.trial.trial_trainable`: Ray Train, or inside the trial for 1-worker CPU runs),
   on the validation-only view of the dataset; the loop selects the epoch on validation.
2. evaluate: each selected checkpoint once on the robustness grid of every evaluation split (Ray
   tasks), keeping the per-sample predictions of the headline curve for the bootstrap.
3. tables: DQF's Table 2 (AUILC per subset and metric) and UMDF's Table 1 (inter-modality
   conditions), mean ± std over train seeds, best per column; each method against the best on the
   headline column (AUILC on {t,a,v} of the task's primary metric): paired t over seeds, paired
   bootstrap over test samples (see `affectune.significance`).
Everything goes to the store's comparison tables (see `affectune.store`), with the lineage of each
method's config (a study's selected trial, a preset, or the method's defaults).

The platform never names a method: configs and their sources come from `resolve_configs`, which
asks each method's class for its preset.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from affectune.metrics import PRIMARY_METRIC, metric_info
from affectune.missing import CONDITION_ORDER, SUBSET_ORDER, format_subset
from affectune.significance import SEED_TEST

HEADLINE_SUBSET = "tav"
"""The headline column's subset: AUILC with every modality subject to missingness (DQF's {t,a,v})."""
TABLE_METRICS = {"regression": ("acc7", "non0_acc2", "non0_f1", "mae", "corr"),
                 "classification": ("war", "uar", "wf1")}
"""Metrics of the tables per task (DQF Table 2's for regression; MERBench's for classification)."""
RUN_KEYS = ("seed", "dataset", "model", "checkpoint_dir", "num_threads")
"""Keys of a stored trial config that belong to that run, not to the method's config."""
_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")


class ComparisonExists(RuntimeError):
    """A comparison of that name is already in the store and overwrite was not asked for."""


@dataclass
class ComparisonSpec:
    """One comparison: methods with their configs x train seeds on one dataset and grid."""

    name: str
    """Comparison name: the store partition (letters, digits, _ . -)."""
    dataset: str
    """Dataset source string (synthetic preset, "mmsa:/path", "merbench:/dir")."""
    configs: dict
    """method -> base train config (TrainConfig keys plus "model_config"); the order is the table's."""
    sources: dict = field(default_factory=dict)
    """method -> lineage {"source": "study" | "preset" | "defaults", "study", "trial_id", "preset"}."""
    train_seeds: tuple = (0, 1, 2, 3, 4)
    """Train seeds every method is trained with (paired across methods)."""
    mask_seeds: tuple = (0,)
    """Mask seeds of the test grid."""
    eval_splits: tuple | None = None
    """Splits evaluated; None = test, plus ood when the dataset has it."""
    n_boot: int = 1000
    """Resamples of the paired bootstrap over test samples."""
    boot_seed: int = 0
    """Seed of the bootstrap resamples."""
    run: dict = field(default_factory=dict)
    """StudySpec keyword arguments for running the jobs (max_concurrent, workers_per_trial,
    gpus_per_worker, cpus_per_worker, resources_per_worker, execution, storage, ray_storage_path,
    shared_storage, worker_start_timeout_s, verbose); checked by StudySpec."""

    def __post_init__(self):
        if not isinstance(self.name, str) or _NAME.search(self.name) or not self.name[:1].isalnum():
            raise ValueError(f"ComparisonSpec: name {self.name!r} must be letters, digits, _ . - "
                             "(it names store partitions)")
        if not self.configs:
            raise ValueError(f"ComparisonSpec {self.name!r}: configs must name at least one method")
        self.train_seeds = tuple(int(s) for s in self.train_seeds)
        if len(self.train_seeds) < 2 or len(set(self.train_seeds)) != len(self.train_seeds):
            raise ValueError(f"ComparisonSpec {self.name!r}: train_seeds must be >= 2 distinct seeds (the paired "
                             f"test over seeds needs two), got {self.train_seeds}")
        if self.n_boot < 100:
            raise ValueError(f"ComparisonSpec {self.name!r}: n_boot must be >= 100, got {self.n_boot}")
        self.sources = {m: dict(self.sources.get(m) or {"source": "given"}) for m in self.configs}
        for method in self.configs:
            self.study_spec(method)  # every method's StudySpec is valid (Ray flags, seeds, splits)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.configs)

    def study_spec(self, method: str):
        """The StudySpec whose run settings this comparison's `method` jobs use."""
        from affectune.studies.spec import StudySpec

        return StudySpec(name=self.name, method=method, dataset=self.dataset, base_config=self.configs[method],
                         train_seeds=self.train_seeds, mask_seeds=self.mask_seeds, eval_splits=self.eval_splits,
                         **self.run)


# --------------------------------------------------------------------------- configs and lineage
def default_name(dataset: str) -> str:
    """compare-<dataset source, made a valid partition name>."""
    return "compare-" + _NAME.sub("-", dataset).strip("-.")


def study_config(store, study: str) -> tuple[str, dict, dict]:
    """(method, config, lineage) of the study's best trial on validation (its selected one)."""
    from affectune.studies.runner import select_trials

    rows = store.studies(study)
    if rows.empty:
        raise ValueError(f"--from-studies: no study {study!r} in store {store.root!r} "
                         f"(have {sorted(store.studies()['study'])})")
    row = rows.iloc[0]
    objectives = [(o["metric"], o["mode"]) for o in json.loads(row["objective"] or "[]")] or [("objective", "max")]
    trials = store.trials(study)
    chosen = trials[trials["selected"].astype(bool)] if "selected" in trials else trials.iloc[:0]
    top = select_trials(chosen if len(chosen) else trials, objectives, 1)[0]
    if not top:
        raise ValueError(f"--from-studies: study {study!r} has no finished trial with a finite objective")
    trial = trials.set_index("trial_id").loc[top[0]]
    config = {k: v for k, v in json.loads(trial["config"]).items() if k not in RUN_KEYS}
    lineage = {"source": "study", "study": study, "trial_id": top[0], "study_dataset": row["dataset"],
               "study_fingerprint": row["fingerprint"]}
    return row["method"], config, lineage


def resolve_configs(methods, dataset: str, *, store=None, from_studies=(), preset: str | None = "paper",
                    log=print) -> tuple[dict, dict]:
    """(method -> start config, method -> lineage): a named study's selected config where one is
    given, else the method's `preset` (for this dataset), else its study defaults (said in `log`)."""
    from affectune.models import model_class

    configs, sources = {}, {}
    for study in from_studies:
        method, config, lineage = study_config(store, study)
        if method in configs:
            raise ValueError(f"--from-studies names two studies of {method!r} ({sources[method]['study']!r}, "
                             f"{study!r}): name one per method")
        if method not in methods:
            raise ValueError(f"--from-studies: study {study!r} is of method {method!r}, not among {list(methods)}")
        configs[method], sources[method] = config, lineage
    for method in methods:
        if method in configs:
            log(f"{method}: config of study {sources[method]['study']!r}, trial {sources[method]['trial_id']}")
            continue
        cls = model_class(method)
        if preset:
            try:
                configs[method] = dict(cls.preset(preset, dataset))
                sources[method] = {"source": "preset", "preset": preset}
                log(f"{method}: its {preset!r} preset")
                continue
            except (KeyError, ValueError) as exc:
                log(f"{method}: no usable {preset!r} preset ({exc.args[0]}); its study defaults instead")
        else:
            log(f"{method}: its study defaults")
        configs[method], sources[method] = dict(cls.study_defaults), {"source": "defaults"}
    return {m: configs[m] for m in methods}, {m: sources[m] for m in methods}


# --------------------------------------------------------------------------- running
@dataclass
class ComparisonResult:
    """What a comparison produced (everything is also in the store)."""

    name: str
    task: str
    runs: pd.DataFrame
    """One row per (method, train seed): config source, parameters, best epoch, validation metrics."""
    curves: pd.DataFrame
    """The robustness grid of every run (method and train_seed columns)."""
    tables: pd.DataFrame
    """The tables' cells (see affectune.store.COMPARISON_TABLE_COLUMNS)."""
    significance: pd.DataFrame
    """Each method against the best (see affectune.store.COMPARISON_SIGNIFICANCE_COLUMNS)."""
    wall_s: float


def run_comparison(spec: ComparisonSpec, address: str | None = None, overwrite: bool = False,
                   local: bool = False, dataset=None) -> ComparisonResult:
    """Train every (method, train seed), evaluate, build the tables, write it all to the store.
    `local`: without Ray, in `max_concurrent` processes of this machine (small or crowded
    machines; the same configs, seeds, selection on validation and grid). `dataset`: the Dataset
    of `spec.dataset` when the caller has loaded it already (large real files), else loaded here."""
    from affectune.data import canonical_source, load
    from affectune.store import open_store
    from affectune.studies.runner import cluster_shape, init_ray
    from affectune.studies.spec import check_store_shared

    started = time.time()
    first = spec.study_spec(spec.methods[0])
    store = open_store(first.storage)
    if len(store.comparisons(spec.name)) or len(store.comparison_runs(spec.name)):
        if not overwrite:
            raise ComparisonExists(f"comparison {spec.name!r} is already in {first.storage!r}: choose another "
                                   "name (--name) or replace it (--overwrite)")
        store.delete_comparison(spec.name)
    store.check_writable()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # as run_study
    if dataset is None:
        dataset = load(spec.dataset)
    elif dataset.source != canonical_source(spec.dataset):
        raise ValueError(f"run_comparison: the dataset given is {dataset.source!r}, the spec's {spec.dataset!r}")
    splits = first.resolved_eval_splits(dataset)
    if local:
        trained, evaluated = _run_local(spec, dataset, splits)
    else:
        init_ray(address)
        check_store_shared(first, *cluster_shape())
        trained = _train(spec, dataset)
        evaluated = _evaluate(spec, dataset, trained, splits)
    runs, curves = _store_runs(spec, store, dataset, trained, evaluated)
    values = per_run_values(curves, dataset.task)
    tables = build_tables(values)
    significance = build_significance(values, {k: v[1] for k, v in evaluated.items()}, dataset.task,
                                      spec.n_boot, spec.boot_seed)
    store.write_comparison({
        "comparison": spec.name, "dataset": spec.dataset, "fingerprint": dataset.fingerprint,
        "task": dataset.task, "primary_metric": PRIMARY_METRIC[dataset.task], "methods": list(spec.methods),
        "train_seeds": list(spec.train_seeds), "mask_seeds": list(spec.mask_seeds), "splits": list(splits),
        "sources": spec.sources,
        "protocol": {"patterns": list(first.patterns), "fills": list(first.fills), "tables": TABLE_METRICS[dataset.task],
                     "headline": {"table": "auilc", "subset": HEADLINE_SUBSET, "metric": PRIMARY_METRIC[dataset.task]},
                     "seed_test": SEED_TEST, "n_boot": spec.n_boot, "boot_seed": spec.boot_seed,
                     "configs": spec.configs}})
    store.write_comparison_tables(spec.name, tables, significance)
    return ComparisonResult(spec.name, dataset.task, runs, curves, tables, significance, time.time() - started)


def _job_trainable(params: dict, *, ctxs: dict, refs: dict) -> None:
    """The Tune trainable of one (method, seed) job: that method's study trial, "eval" phase."""
    from affectune.studies.trial import trial_trainable

    job = refs["eval_runs"][params["eval_run"]]
    trial_trainable(params, ctx=ctxs[job["method"]], refs=refs)


def _train(spec: ComparisonSpec, dataset) -> dict:
    """(method, seed) -> {"checkpoint", "num_parameters", "best_epoch", "wall_time_s", val_*...}:
    one Tune grid over every job, at most `max_concurrent` at a time, each with its method's context."""
    import ray
    from ray import tune

    from affectune.studies.runner import _resolve_objectives, _run_config, _val_columns, _with_resources, \
        trial_context, tune_output
    from affectune.studies.trial import search_view

    jobs = [{"method": m, "seed": s, "trial_id": m, "config": spec.configs[m], "params": {},
             "artifact_name": f"{m}-seed{s}"} for m in spec.methods for s in spec.train_seeds]
    ctxs = {}
    for method in spec.methods:
        study = spec.study_spec(method)
        ctxs[method] = trial_context(study, dataset, dict(spec.configs[method]),
                                     _resolve_objectives(study, dataset), phase="eval")
    first = spec.study_spec(spec.methods[0])
    refs = {"dataset": [ray.put(search_view(dataset))], "spec": dataset.spec(), "eval_runs": jobs}
    trainable = _with_resources(first, first.resolved_execution,
                                tune.with_parameters(_job_trainable, ctxs=ctxs, refs=refs))
    tuner = tune.Tuner(trainable, param_space={"eval_run": tune.grid_search(list(range(len(jobs))))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=first.max_concurrent),
                       run_config=_run_config(first, f"{spec.name}-runs", "objective"))
    with tune_output(first.verbose):
        results = tuner.fit()
    root = ctxs[spec.methods[0]].store_root
    trained = {}
    for result in results:
        job = jobs[result.config["eval_run"]]
        if result.error is not None:
            raise RuntimeError(f"comparison {spec.name!r}: {job['method']} with seed {job['seed']} failed: "
                               f"{result.error}")
        history = result.metrics_dataframe
        best = history.loc[history["best_epoch"] == history["epoch"]].iloc[-1]
        trained[(job["method"], job["seed"])] = {
            "checkpoint": f"{root.rstrip('/')}/artifacts/study={spec.name}/{job['artifact_name']}/best.pt",
            "num_parameters": int(best["num_parameters"]), "best_epoch": int(best["epoch"]),
            "wall_time_s": float(history["time_total_s"].iloc[-1]), **_val_columns(best)}
    return {(m, s): trained[(m, s)] for m in spec.methods for s in spec.train_seeds}


def _evaluate_job(store_root: str, path: str, dataset, splits, mask_seeds, cpus: float, gpus: float):
    """(curves, {split: (labels, {rate: predictions})}) of one checkpoint (a Ray task): the grid on
    every split, and the per-sample predictions of the headline curve (first mask seed)."""
    from affectune.studies.runner import load_stored_model

    return _grids(load_stored_model(store_root, path, cpus, gpus), dataset, splits, mask_seeds)


def _grids(model, dataset, splits, mask_seeds):
    """_evaluate_job's result for a model in memory."""
    from affectune.evaluate import robustness

    curves, headline = [], {}
    for split in splits:
        result = robustness(model, dataset, split=split, seeds=mask_seeds, keep_predictions=True)
        curves.append(result.curves)
        headline[split] = (result.labels, {rate: pred for (cond, label, rate), pred in result.predictions.items()
                                           if cond == "intra" and label == HEADLINE_SUBSET})
    return pd.concat(curves, ignore_index=True), headline


def _run_local(spec: ComparisonSpec, dataset, splits) -> tuple[dict, dict]:
    """(trained, evaluated) as `_train` and `_evaluate` give them, without Ray: `max_concurrent`
    forked processes of this machine (one job each at a time); the loop trains on the
    validation-only view and the selected weights are evaluated (nothing stored as an artifact)."""
    import multiprocessing

    import torch._dynamo  # noqa: F401  the first optimizer imports it (~5 s): once here, not in every forked job

    jobs = [(method, seed) for method in spec.methods for seed in spec.train_seeds]
    threads = max(1, int(spec.run.get("cpus_per_worker", 1)))
    args = [(spec, dataset, splits, method, seed, threads) for method, seed in jobs]
    workers = min(len(jobs), int(spec.run.get("max_concurrent", 2)))
    with multiprocessing.get_context("fork").Pool(workers) as pool:  # fork: no re-import per job
        results = pool.starmap(_local_job, args, chunksize=1)
    return ({job: r[0] for job, r in zip(jobs, results)}, {job: r[1] for job, r in zip(jobs, results)})


def _local_job(spec: ComparisonSpec, dataset, splits, method: str, seed: int, threads: int):
    """One (method, seed) job of `_run_local`: (trained entry, evaluated entry)."""
    import tempfile

    from affectune.studies.trial import search_view
    from affectune.train import load_checkpoint, train_loop

    config = {"num_threads": threads, **spec.configs[method], "model": method, "dataset": spec.dataset, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="affectune-compare-") as tmp:
        outcome = train_loop({**config, "checkpoint_dir": tmp}, dataset=search_view(dataset))
        model, _ = load_checkpoint(outcome.checkpoint_path)
    best = outcome.best_metrics
    trained = {"num_parameters": outcome.num_parameters, "best_epoch": outcome.best_epoch,
               "wall_time_s": outcome.wall_time_s, **{k: v for k, v in best.items() if k.startswith(("val_", "valmask_"))}}
    evaluated = _grids(model, dataset, splits, spec.mask_seeds)
    print(f"[{spec.name}] {method} seed {seed}: best epoch {outcome.best_epoch}, {outcome.wall_time_s:.0f} s "
          "training", flush=True)
    return trained, evaluated


def _evaluate(spec: ComparisonSpec, dataset, trained: dict, splits) -> dict:
    """(method, seed) -> _evaluate_job's result; Ray tasks with the jobs' worker resources."""
    import ray

    first = spec.study_spec(spec.methods[0])
    root = first.storage if "://" in first.storage else os.path.abspath(first.storage)
    full_ref = ray.put(dataset)
    task = ray.remote(_evaluate_job).options(num_cpus=first.cpus_per_worker, num_gpus=first.gpus_per_worker or 0,
                                             resources=dict(first.resources_per_worker) or None)
    pending = {key: task.remote(root, run["checkpoint"], full_ref, splits, spec.mask_seeds,
                                first.cpus_per_worker, first.gpus_per_worker) for key, run in trained.items()}
    return {key: ray.get(ref) for key, ref in pending.items()}


def _store_runs(spec: ComparisonSpec, store, dataset, trained: dict, evaluated: dict):
    """Write every run's row and curves; return (runs, curves) frames."""
    from affectune import code_version

    version = code_version()
    runs, curves = [], []
    for (method, seed), run in trained.items():
        source = spec.sources[method]
        row = {"method": method, "train_seed": seed, "source": source["source"],
               "source_study": source.get("study"), "source_trial": source.get("trial_id"),
               "config": spec.configs[method], "dataset": spec.dataset, "fingerprint": dataset.fingerprint,
               "code_version": version, **{k: v for k, v in run.items() if k != "checkpoint"}}
        grid = evaluated[(method, seed)][0]
        store.write_comparison_run(spec.name, row, grid)
        runs.append(row)
        curves.append(grid.assign(method=method, train_seed=seed))
    return pd.DataFrame(runs), pd.concat(curves, ignore_index=True)


# --------------------------------------------------------------------------- tables
def per_run_values(curves: pd.DataFrame, task: str) -> pd.DataFrame:
    """One value per (table, split, method, train_seed, subset, metric): AUILC (mean over mask seeds)
    of each intra curve, the metric under each inter condition; random pattern, zero fill."""
    from affectune.evaluate import summarize

    metrics = TABLE_METRICS[task]
    base = curves[(curves["pattern"] == "random") & (curves["fill"] == "zero") & curves["metric"].isin(metrics)]
    parts = []
    for (method, seed), part in base.groupby(["method", "train_seed"], sort=False):
        summary = summarize(part)
        parts.append(summary.assign(method=method, train_seed=seed, table="auilc", value=summary["auilc"]))
        inter = part[part["condition"] == "inter"]
        parts.append(inter.groupby(["split", "subset", "metric"], sort=False)["value"].mean().reset_index()
                     .assign(method=method, train_seed=seed, table="inter"))
    keys = ["table", "split", "method", "train_seed", "subset", "metric", "value"]
    return pd.concat([p[keys] for p in parts], ignore_index=True)


def build_tables(values: pd.DataFrame) -> pd.DataFrame:
    """Cells: mean, std (ddof=1) and n over train seeds; `best` marks each column's best mean."""
    cells = (values.groupby(["table", "split", "method", "subset", "metric"], sort=False)["value"]
             .agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count").reset_index())
    column = cells.groupby(["table", "split", "subset", "metric"], sort=False)["mean"]
    best_max, best_min = column.transform("max"), column.transform("min")
    is_min = cells["metric"].map(lambda m: metric_info(m).direction == "min")
    cells["best"] = np.where(is_min, cells["mean"] == best_min, cells["mean"] == best_max)
    return cells


def build_significance(values: pd.DataFrame, headline: dict, task: str, n_boot: int, boot_seed: int) -> pd.DataFrame:
    """Per split, every method against the best on the headline column (AUILC {t,a,v}, primary
    metric): paired t over train seeds, paired bootstrap over test samples.
    `headline`: (method, seed) -> {split: (labels, {rate: (N, k) predictions})}."""
    from affectune.significance import paired_bootstrap, paired_t

    metric = PRIMARY_METRIC[task]
    pick = min if metric_info(metric).direction == "min" else max
    rows = []
    col = values[(values["table"] == "auilc") & (values["subset"] == HEADLINE_SUBSET) & (values["metric"] == metric)]
    for split, part in col.groupby("split", sort=False):
        by_seed = part.pivot_table(index="train_seed", columns="method", values="value", sort=False)
        means = by_seed.mean()
        reference = pick(means.index, key=lambda m: means[m])
        stats = _bootstrap_stats(headline, split, metric, n_boot, boot_seed)
        for method in means.index:
            row = {"split": split, "method": method, "reference": reference, "table": "auilc",
                   "subset": HEADLINE_SUBSET, "metric": metric, "seed_test": SEED_TEST, "n_boot": n_boot,
                   "seed_p": math.nan, "seed_effect": math.nan, "bootstrap_p": math.nan,
                   "bootstrap_ci_low": math.nan, "bootstrap_ci_high": math.nan}
            paired = by_seed[method].notna() & by_seed[reference].notna()  # seeds both methods ran
            ours, best = by_seed[method][paired], by_seed[reference][paired]
            row.update(diff=float((ours - best).mean()), n_seeds=int(paired.sum()))
            if method != reference:
                _t, row["seed_p"], row["seed_effect"] = paired_t(ours, best)
                row["bootstrap_p"], row["bootstrap_ci_low"], row["bootstrap_ci_high"] = paired_bootstrap(
                    stats[method], stats[reference])
            rows.append(row)
    return pd.DataFrame(rows)


def _bootstrap_stats(headline: dict, split: str, metric: str, n_boot: int, boot_seed: int) -> dict[str, np.ndarray]:
    """method -> (n_boot,) headline AUILC on each resample of the split's test samples (mean over seeds)."""
    from affectune.significance import auilc_weights, resample_weights, weighted_metric

    per_method: dict[str, list[np.ndarray]] = {}
    weights = None
    for (method, _seed), splits in headline.items():
        labels, preds = splits[split]
        rates = sorted(preds)
        if weights is None:  # the same resamples for every method and seed: paired
            weights = resample_weights(len(labels), n_boot, boot_seed)
        curve = np.stack([weighted_metric(metric, labels, preds[r], weights) for r in rates], axis=1)  # (B, R)
        per_method.setdefault(method, []).append(curve @ auilc_weights(rates))
    return {m: np.mean(v, axis=0) for m, v in per_method.items()}


# --------------------------------------------------------------------------- exports
TABLE_TITLES = {"auilc": "AUILC per missing subset and metric (DQF Table 2 layout)",
                "inter": "Inter-modality conditions: available modalities (UMDF Table 1 layout)"}


def _columns(cells: pd.DataFrame, table: str, metrics=None) -> list[tuple[str, str]]:
    """(subset, metric) columns: subsets in the table's row order, metrics in TABLE_METRICS order."""
    order = SUBSET_ORDER if table == "auilc" else CONDITION_ORDER
    present = set(zip(cells["subset"], cells["metric"]))
    metrics = metrics or [m for task in TABLE_METRICS.values() for m in task]
    return [(s, m) for s in order for m in metrics if (s, m) in present]


def _splits(tables: pd.DataFrame) -> list[str]:
    """The tables' splits, test first."""
    return sorted(dict.fromkeys(tables["split"]), key=lambda s: (s != "test", s))


def wide_table(tables: pd.DataFrame, significance: pd.DataFrame, table: str, split: str,
               metrics=None) -> pd.DataFrame:
    """Numeric wide form of one table: a row per method, "<subset> <metric> mean|std|best" columns,
    and for the AUILC table the significance columns (diff, seed_p, seed_effect, bootstrap_p, CI)."""
    cells = tables[(tables["table"] == table) & (tables["split"] == split)]
    index = pd.Index(list(dict.fromkeys(cells["method"])), name="method")
    indexed = cells.set_index(["method", "subset", "metric"])
    columns = {}  # built whole, then one frame: column-by-column inserts fragment it (PerformanceWarning)
    for subset, metric in _columns(cells, table, metrics):
        part = indexed.xs((subset, metric), level=("subset", "metric"))
        for stat in ("mean", "std", "best"):
            columns[f"{subset} {metric} {stat}"] = part[stat]
    columns["n_seeds"] = cells.groupby("method", sort=False)["n_seeds"].max()
    if table == "auilc" and significance is not None and len(significance):
        sig = significance[significance["split"] == split].set_index("method")
        for key in ("reference", "diff", "seed_p", "seed_effect", "bootstrap_p", "bootstrap_ci_low",
                    "bootstrap_ci_high"):
            columns[key] = sig[key]
    return pd.DataFrame({k: v.reindex(index) for k, v in columns.items()}, index=index).reset_index()


def _cell(mean: float, std: float, best: bool, style: str) -> str:
    if not math.isfinite(mean):
        return "n/a"
    pm = " $\\pm$ " if style == "latex" else " ± "
    text = f"{mean:.3f}" + (f"{pm}{std:.3f}" if math.isfinite(std) else "")
    if not best:
        return text
    return f"\\textbf{{{text}}}" if style == "latex" else f"**{text}**"


def _p(value: float) -> str:
    return "" if not math.isfinite(value) else ("<0.001" if value < 1e-3 else f"{value:.3f}")


def _significance_cells(row, style: str) -> list[str]:
    if row["method"] == row["reference"]:
        return ["best", "", "", "", ""]
    ci = f"[{row['bootstrap_ci_low']:+.3f}, {row['bootstrap_ci_high']:+.3f}]"
    lt = "$<$0.001" if style == "latex" else "<0.001"
    fix = (lambda s: s.replace("<0.001", lt))
    return [f"{row['diff']:+.3f}", fix(_p(row["seed_p"])), f"{row['seed_effect']:+.2f}",
            fix(_p(row["bootstrap_p"])), ci]


SIGNIFICANCE_HEADER = ("Δ vs best", "p (paired t, seeds)", "d_z", "p (bootstrap, samples)", "95% CI of Δ")


def render(tables: pd.DataFrame, significance: pd.DataFrame | None, table: str, split: str,
           style: str = "markdown", metrics=None) -> str:
    """One table as Markdown or LaTeX (booktabs): methods as rows, (subset, metric) columns, mean ±
    std over train seeds, the best of each column in bold; the AUILC table adds the significance of
    each method against the best on the headline column."""
    wide = wide_table(tables, significance, table, split, metrics)
    cells = tables[(tables["table"] == table) & (tables["split"] == split)]
    columns = _columns(cells, table, metrics)
    with_sig = "reference" in wide.columns
    body = []
    for _, row in wide.iterrows():
        cells_text = [_cell(row[f"{s} {m} mean"], row[f"{s} {m} std"], bool(row[f"{s} {m} best"]), style)
                      for s, m in columns]
        body.append([row["method"], *cells_text, *(_significance_cells(row, style) if with_sig else [])])
    labels = [f"{format_subset(s)} {metric_info(m).label}" for s, m in columns]
    sig_header = list(SIGNIFICANCE_HEADER) if with_sig else []
    if style == "markdown":
        head = ["method", *labels, *sig_header]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    if style != "latex":
        raise ValueError(f"style must be 'markdown' or 'latex', got {style!r}")
    return _latex(columns, body, [h.replace("Δ", "$\\Delta$").replace("d_z", "$d_z$") for h in sig_header])


def _latex_set(subset: str) -> str:
    return "$" + format_subset(subset).replace("{", "\\{").replace("}", "\\}") + "$"


def _latex(columns, body, sig_header) -> str:
    """booktabs tabular: a subset header row over its metrics (cmidrule), then the metric row."""
    groups = list(dict.fromkeys(s for s, _ in columns))
    spans, start = [], 2
    for subset in groups:
        width = sum(1 for s, _ in columns if s == subset)
        spans.append((subset, start, start + width - 1))
        start += width
    esc = (lambda t: t.replace("_", "\\_").replace("%", "\\%"))
    n = 1 + len(columns) + len(sig_header)
    lines = [f"\\begin{{tabular}}{{l{'c' * (n - 1)}}}", "\\toprule",
             " & " + " & ".join(f"\\multicolumn{{{b - a + 1}}}{{c}}{{{_latex_set(s)}}}" for s, a, b in spans)
             + (" & " * len(sig_header)) + " \\\\",
             " ".join(f"\\cmidrule(lr){{{a}-{b}}}" for _, a, b in spans),
             "Method & " + " & ".join(esc(metric_info(m).label) for _, m in columns)
             + "".join(f" & {h}" for h in (esc(h) if "$" not in h else h for h in sig_header)) + " \\\\",
             "\\midrule"]
    lines += [" & ".join(esc(c) if i == 0 else c for i, c in enumerate(r)) + " \\\\" for r in body]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"])


def format_markdown(tables: pd.DataFrame, significance: pd.DataFrame | None, title: str = "",
                    metrics=None) -> str:
    """Both tables for every split, with headings (what the script prints and the README shows)."""
    out = [f"### {title}", ""] if title else []
    for split in _splits(tables):
        for table in ("auilc", "inter"):
            n = int(tables["n_seeds"].max())
            out += [f"**{TABLE_TITLES[table]}, {split} split**, mean ± std over {n} train seeds; best in bold.", "",
                    render(tables, significance, table, split, "markdown", metrics), ""]
        if significance is not None and len(significance):
            sig = significance[significance["split"] == split].iloc[0]
            out += [f"Δ, p and d_z: AUILC {format_subset(sig['subset'])} {metric_info(sig['metric']).label} of each "
                    f"method minus the best's ({sig['reference']}); p over seeds: {SEED_TEST} test (d_z = Cohen's "
                    f"effect size); over test samples: paired bootstrap, {int(sig['n_boot'])} resamples.", ""]
    return "\n".join(out)


def export(tables: pd.DataFrame, significance: pd.DataFrame, directory: str, name: str, title: str = "") -> list[str]:
    """Write <name>.md (both tables), <name>-<table>-<split>.csv (numeric) and .tex (booktabs), every metric."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"{name}.md")]
    with open(paths[0], "w") as f:
        f.write(format_markdown(tables, significance, title) + "\n")
    for split in _splits(tables):
        for table in ("auilc", "inter"):
            stem = os.path.join(directory, f"{name}-{table}-{split}")
            wide_table(tables, significance, table, split).to_csv(stem + ".csv", index=False)
            with open(stem + ".tex", "w") as f:
                f.write(render(tables, significance, table, split, "latex") + "\n")
            paths += [stem + ".csv", stem + ".tex"]
    return paths
