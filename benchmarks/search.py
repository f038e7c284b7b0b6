"""`python -m benchmarks.search`: search efficiency of grid, random, TPE and TPE + ASHA, as a
tabular benchmark (the HPO-B / NAS-Bench way; a 2-core machine cannot run 5 seeds x 5 methods of
real studies).

1. The table: every point of a discretised search space is trained once per train seed for the
   full epoch budget with the platform's own `train_loop` (base config = the method's
   `study_defaults`); per epoch the validation objective (the loop's selection metric) is kept,
   and the best-epoch checkpoint (git-ignored) is kept for the test robustness grid (MAE AUILC,
   mean over the 7 missing-modality subsets, mask seed 0), run only for configs some search picks.
   Stored in benchmarks/tables/<method>-<space>.json; entries missing from it are trained (or all
   with --rebuild), so an interrupted build resumes.
2. The replay: each search method proposes configs with the real Optuna samplers the platform
   uses (grid = BruteForceSampler in a seeded order, RandomSampler, TPESampler); a proposed
   config "trains" by reading its curve for the study's train seed (the platform trains every
   search trial with the study seed). TPE + ASHA feeds every epoch to the scheduler the platform
   builds (`affectune.studies.runner.asha_scheduler`, Ray's ASHAScheduler with the study's grace
   period and reduction factor, optionally the plateau rule) and stops where it says STOP; Optuna
   is told the best-so-far value, as in a study. A proposal that repeats a finished config is told
   its known result without training, as the study's searcher does (`searcher.ask_unseen`). Trials
   run one at a time until the grid's epoch budget is spent or the space is exhausted. The
   candidates (`METHODS`) are options of the platform's own builders.
   The final pick is the platform's own `select_trials` over the replayed trial rows; its test
   AUILC is the mean over the table's train seeds (the final evaluation retrains the pick with
   every train seed). Test numbers are reported only: nothing in the replay reads them.

    python -m benchmarks.search                  # build missing tables, replay, print, write docs/img
    python -m benchmarks.search --jobs 2 --rebuild
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TABLES = ROOT / "tables"


@dataclass(frozen=True)
class TabularSpace:
    """A discretised search space of one method, trained exhaustively for the table."""

    method: str
    name: str
    dataset: str
    epochs: int
    dims: dict
    """param -> the discrete values tried (a sub-grid of the method's registered space)."""
    train_seeds: tuple = (0, 1)
    fixed: dict | None = None
    """Constant overrides of the method's study defaults (e.g. a derived width)."""

    def points(self) -> list[dict]:
        keys = list(self.dims)
        return [dict(zip(keys, values)) for values in itertools.product(*self.dims.values())]

    @property
    def path(self) -> Path:
        return TABLES / f"{self.method}-{self.name}.json"


SPACES = {
    # DQF `wide` (models/dqf.py) on a sub-grid: depth, head width (hidden = 2 heads * head_dim) and
    # the learning rate over two decades, the dimension that matters most at this budget (3e-4
    # stays on the plateau for 8 epochs, 3e-2 is unstable), so a search has poor regions to avoid.
    # A 229-sample validation split (`valid_scale=1`) keeps the per-epoch objective's noise below
    # the differences between configs; 2 heads keep an entry to ~10-40 s on one loaded core.
    "dqf-wide": TabularSpace("dqf", "wide", "synthetic:mosi?scale=0.15&valid_scale=1", 8,
                             {"layers": (1, 2), "heads": (2,), "head_dim": (4, 8),
                              "lr": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2), "dropout": (0.1,), "aux_weight": (1.0,)},
                             train_seeds=(0, 1, 2)),
    # UMDF `distill` (models/umdf.py): the two distillation weights at both ends of their range
    # (lambda1: MMD of the two streams' features, lambda2: their logits) and between, x the lr over
    # the space's decade (3e-4 barely leaves the plateau in 8 epochs); 1 MCIM layer, 4 heads (the
    # study defaults). An entry takes ~30 s on one core, so 18 points x 3 seeds build in ~25 min.
    "umdf-distill": TabularSpace("umdf", "distill", "synthetic:mosi?scale=0.15&valid_scale=1", 8,
                                 {"lambda1": (0.01, 0.3, 10.0), "lambda2": (0.01, 10.0), "layers": (1,), "heads": (4,),
                                  "lr": (3e-4, 1e-3, 3e-3)}, train_seeds=(0, 1, 2)),
    # MCULoRA `wide` (models/mculora.py): the projection and MLP LoRA ranks at 1 and 16 (the study
    # width is 32) x the lr over the space's two decades; the other draws at the config's defaults
    # (head rank 4, orthogonality 1e-3, DPFT step 5e-3, clip 0.5 = probabilities in [0.071, 0.214]).
    "mculora-wide": TabularSpace("mculora", "wide", "synthetic:mosi?scale=0.15&valid_scale=1", 10,
                                 {"rank_proj": (1, 16), "rank_mlp": (1, 16), "rank_head": (4,), "orth_weight": (1e-3,),
                                  "dpft_step": (5e-3,), "dpft_clip": (0.5,), "dropout": (0.1,),
                                  "lr": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}, train_seeds=(0, 1, 2)),
}


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


# --------------------------------------------------------------------------- the table
def _train_config(space: TabularSpace, point: dict, seed: int) -> dict:
    """The train config a study trial of this point would run (the method's study defaults + draws)."""
    from affectune.models import model_class
    from affectune.search_spaces import draw, get_space, route_overrides

    registered = get_space(space.method, space.name)
    params = draw(registered, point)
    params = {k: v for k, v in params.items() if k not in registered.helpers}
    config = route_overrides(space.method, model_class(space.method).study_defaults, space.fixed or {})
    config = route_overrides(space.method, config, params)
    return {**config, "model": space.method, "dataset": space.dataset, "seed": seed, "epochs": space.epochs,
            "patience": None, "num_threads": 1}


def train_entry(space: TabularSpace, point: dict, seed: int) -> dict:
    """One table entry: the per-epoch validation objective; the best checkpoint is kept (git-ignored)
    for the test grid, which runs only for configs some search picks (`test_auilc`)."""
    import torch

    from affectune.data import load
    from affectune.train import train_loop

    torch.set_num_threads(1)
    started = time.time()
    ckpt = _checkpoint_dir(space, point, seed)
    out = train_loop({**_train_config(space, point, seed), "checkpoint_dir": str(ckpt)}, dataset=load(space.dataset))
    return {"point": point, "seed": seed, "objective": [float(e["objective"]) for e in out.history],
            "select_metric": out.select_metric, "best_epoch": out.best_epoch, "wall_s": time.time() - started}


def _checkpoint_dir(space: TabularSpace, point: dict, seed: int) -> Path:
    import hashlib

    digest = hashlib.sha1(point_key(point).encode()).hexdigest()[:12]
    return TABLES / "checkpoints" / f"{space.method}-{space.name}" / f"{digest}-seed{seed}"


def test_auilc(space: TabularSpace, point: dict, seed: int) -> float:
    """MAE AUILC on test (mean over the 7 subsets, mask seed 0) of the entry's best checkpoint
    (retrained when the checkpoint is not on this machine)."""
    import torch

    from affectune.data import load
    from affectune.evaluate import robustness, summarize
    from affectune.train import CHECKPOINT_FILE, load_checkpoint

    torch.set_num_threads(1)
    path = _checkpoint_dir(space, point, seed) / CHECKPOINT_FILE
    if not path.exists():
        train_entry(space, point, seed)
    model, _ = load_checkpoint(path)
    summary = summarize(robustness(model, load(space.dataset), split="test", seeds=(0,), include_inter=False).curves)
    return float(summary[summary["metric"] == "mae"]["auilc"].mean())


def build_table(space: TabularSpace, jobs: int, rebuild: bool = False) -> dict:
    """Train every (point, train seed) missing from the table file; saved after each entry."""
    table = {} if rebuild or not space.path.exists() else json.loads(space.path.read_text())
    if (table.get("dataset"), table.get("epochs")) != (space.dataset, space.epochs):
        table = {}  # entries trained on other data or for another budget are not this table's
    points = {point_key(p) for p in space.points()}
    entries = {k: v for k, v in table.get("entries", {}).items() if k.split("|")[0] in points}
    table["entries"] = entries
    table.update(method=space.method, space=space.name, dataset=space.dataset, epochs=space.epochs,
                 dims={k: list(v) for k, v in space.dims.items()}, train_seeds=list(space.train_seeds))
    todo = [(p, s) for s in space.train_seeds for p in space.points() if f"{point_key(p)}|{s}" not in entries]
    print(f"[table {space.method}-{space.name}] {len(entries)} entries stored, {len(todo)} to train", flush=True)
    TABLES.mkdir(exist_ok=True)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(train_entry, space, p, s) for p, s in todo]
        for done, future in enumerate(as_completed(futures), 1):
            entry = future.result()
            entries[f"{point_key(entry['point'])}|{entry['seed']}"] = entry
            _save(space, table)
            print(f"  {done}/{len(todo)} {entry['point']} seed {entry['seed']}: "
                  f"{' '.join(f'{v:.3f}' for v in entry['objective'])} "
                  f"({entry['wall_s']:.0f} s)", flush=True)
    return table


# --------------------------------------------------------------------------- the replay
PLATEAU_TOL = 0.05
"""The plateau rule's threshold in the replay: a trial has left the plateau once its objective
improved on its first epoch's value by 5% of it (MAE 1.06 -> below 1.01; the plateau's epoch-to-
epoch jitter on the 229-sample validation split is 0.01-0.03)."""

METHODS = {
    "grid": {"sampler": "grid"},
    "random": {"sampler": "random"},
    "tpe, 10 start-up": {"sampler": "tpe", "startup": 10},
    "tpe, start-up for the budget": {"sampler": "tpe"},
    "tpe, repeats retrained": {"sampler": "tpe", "repeats": True},
    "tpe+asha grace 1, 10 start-up, repeats retrained (first default)": {"sampler": "tpe", "startup": 10, "grace": "1",
                                                                         "repeats": True},
    "tpe+asha grace quarter, repeats retrained (second default)": {"sampler": "tpe", "grace": "quarter", "repeats": True},
    "tpe+asha grace 1": {"sampler": "tpe", "grace": "1"},
    "tpe+asha grace quarter": {"sampler": "tpe", "grace": "quarter"},
    "tpe+asha grace quarter + plateau": {"sampler": "tpe", "grace": "quarter", "plateau": True},
    "tpe+asha, 10 start-up": {"sampler": "tpe", "startup": 10, "grace": "default"},
    "tpe+asha (platform default)": {"sampler": "tpe", "grace": "default"},
    "tpe+asha + plateau": {"sampler": "tpe", "grace": "default", "plateau": True},
}
"""Search methods compared, as options of the platform's own builders: the sampler (`runner._sampler`;
TPE's start-up trials Optuna's 10 or `default_tpe_startup_trials` of the grid's trial count when
not given), whether a proposal that repeats a finished config is retrained (`repeats`; the
platform tells it its known result, `searcher.ask_unseen`), ASHA's grace period (1, a quarter of the
budget (at least 2), or `default_grace_period`) and the plateau rule (`asha_scheduler(plateau_tol=...)`)."""
DEFAULT_METHOD = "tpe+asha (platform default)"
"""The search a study runs when nothing is set (StudySpec's defaults)."""


class _ReplayedTrial:
    """What Ray's ASHA reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _sampler(options: dict, seed: int, n_points: int):
    """The platform's sampler rule (`runner._sampler`) for a study of `n_points` trials: the grid is
    a finite space tried once per point (BruteForceSampler), TPE the open-ended one; random is
    Optuna's own."""
    from types import SimpleNamespace

    import optuna

    from affectune.studies import runner
    from affectune.studies.spec import StudySpec

    if options["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    grid = tuple(range(n_points)) if options["sampler"] == "grid" else ()
    spec = StudySpec(name="replay", method="replay", num_trials=n_points, seed=seed,
                     tpe_startup_trials=options.get("startup"))
    return runner._sampler(SimpleNamespace(grid=grid), spec)


def _grace(options: dict, epochs: int) -> int | None:
    """The ASHA grace period of a method (None: no ASHA), through the platform's own rule."""
    from affectune.studies.spec import default_grace_period

    if "grace" not in options:
        return None
    return {"1": 1, "quarter": min(epochs, max(2, epochs // 4)), "default": default_grace_period(epochs)}[options["grace"]]


def replay(table: dict, method: str, search_seed: int, budget: int, reduction_factor: int = 2) -> dict:
    """One search over the table until `budget` epochs are spent, trials one at a time.

    Returns the trace (best validation objective seen after each epoch), the trial rows (as the
    study store would hold them) and the final pick by the platform's `select_trials`."""
    import optuna
    import pandas as pd
    from ray.tune.schedulers import TrialScheduler

    from affectune.metrics import metric_direction
    from affectune.studies.runner import asha_scheduler, select_trials
    from affectune.studies.searcher import ask_unseen

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dims, epochs = table["dims"], table["epochs"]
    train_seed = table["train_seeds"][search_seed % len(table["train_seeds"])]  # a study trains with its seed
    first = next(iter(table["entries"].values()))
    mode = metric_direction(first["select_metric"].split("_", 1)[1])
    better = min if mode == "min" else max
    options = METHODS[method]
    grace = _grace(options, epochs)
    plateau_tol = PLATEAU_TOL if options.get("plateau") else None
    scheduler = asha_scheduler("objective", mode, epochs, grace, reduction_factor, plateau_tol) if grace else None
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                sampler=_sampler(options, search_seed, len(list(itertools.product(*dims.values())))))
    trace, rows = [], []

    def ask() -> optuna.trial.Trial:
        trial = study.ask()
        for k, v in dims.items():
            trial.suggest_categorical(k, list(v))
        return trial

    while len(trace) < budget:  # trials one at a time; a proposal that repeats a finished config is
        trial = ask() if options.get("repeats") else ask_unseen(study, ask)  # told its value (the platform's rule)
        if trial is None:
            break  # only repeats came: the space is exhausted
        curve = table["entries"][f"{point_key(trial.params)}|{train_seed}"]["objective"]
        replayed = _ReplayedTrial(f"t{trial.number:04d}")
        if scheduler:
            scheduler.on_trial_add(None, replayed)
        best = None
        for epoch, value in enumerate(curve, 1):  # the trial "trains": its curve is read epoch by epoch
            best = value if best is None else better(best, value)
            trace.append(best if len(trace) == 0 else better(trace[-1], best))
            stop = scheduler and scheduler.on_trial_result(
                None, replayed, {"training_iteration": epoch, "objective": value}) == TrialScheduler.STOP
            if len(trace) >= budget or (stop and epoch < epochs):
                break
        rows.append({"trial_id": replayed.trial_id, "point": dict(trial.params), "epochs_run": epoch,
                     "best_objective": best, "status": "completed" if epoch == epochs else "stopped"})
        try:
            study.tell(trial, best)  # best-so-far, as the platform tells Optuna (runner module docstring)
        except RuntimeError as error:  # the grid's sampler stops the study once every point ran
            if "Study.stop" not in str(error):
                raise
            break
    selected, _ = select_trials(pd.DataFrame(rows), (("objective", mode),), 1)
    pick = next(r["point"] for r in rows if r["trial_id"] == selected[0])
    startup = getattr(study.sampler, "_n_startup_trials", None)  # TPE's start-up trials (None: not TPE)
    return {"trace": trace, "rows": rows, "pick": pick, "mode": mode, "grace": grace, "startup": startup,
            "plateau": plateau_tol, "train_seed": train_seed}


def run_replays(table: dict, seeds: range) -> dict:
    """method -> list over search seeds of replays, all at the grid's total epochs."""
    budget = len(list(itertools.product(*table["dims"].values()))) * table["epochs"]
    return {m: [replay(table, m, s, budget) for s in seeds] for m in METHODS}


def summarize_replays(table: dict, runs: dict, fraction: float = 0.4) -> list[dict]:
    """Per method: best validation objective at `fraction` and at all of the grid's epochs, epochs
    to reach the grid's best (mean + std over train seeds), trials stopped early, test AUILC of the picks."""
    import numpy as np

    budget = len(runs["grid"][0]["trace"])
    mode = runs["grid"][0]["mode"]
    # the grid's best per train seed (every point, every epoch); a search on train seed k reached it when
    # its best so far is within one std (over train seeds) of the grid's best on train seed k
    grid_best = np.array([(min if mode == "min" else max)(v for e in table["entries"].values() if e["seed"] == s
                                                         for v in e["objective"]) for s in table["train_seeds"]])
    sign = 1 if mode == "min" else -1
    targets = dict(zip(table["train_seeds"], grid_best + sign * grid_best.std(ddof=1)))
    target = grid_best.mean() + sign * grid_best.std(ddof=1)  # for the plot: all train seeds together
    def pick_auilc(point: dict) -> float:  # the final evaluation: mean over the train seeds
        return float(np.mean([table["entries"][f"{point_key(point)}|{s}"]["test_auilc_mae"]
                              for s in table["train_seeds"]]))

    out = []
    for method, replays in runs.items():
        at = lambda f: np.array([r["trace"][min(len(r["trace"]), max(1, round(f * budget))) - 1] for r in replays])  # noqa: E731
        reach = [next((i + 1 for i, v in enumerate(r["trace"]) if sign * (v - targets[r["train_seed"]]) <= 0), None)
                 for r in replays]
        out.append({"method": method, "grace": replays[0]["grace"], "startup": replays[0]["startup"],
                    "plateau": replays[0]["plateau"], "at_fraction": at(fraction), "at_end": at(1.0),
                    "reach": reach, "budget": budget, "target": target, "targets": targets, "grid_best": grid_best,
                    "trials": np.array([len(r["rows"]) for r in replays]),
                    "spent": np.array([len(r["trace"]) for r in replays]),  # less than the budget: space exhausted
                    "stopped": np.array([sum(row["status"] == "stopped" for row in r["rows"]) for r in replays]),
                    "test_auilc": np.array([pick_auilc(r["pick"]) for r in replays])})
    return out


def evaluate_picks(space: TabularSpace, table: dict, runs: dict, jobs: int) -> None:
    """Test AUILC of every (picked config, train seed) not yet in the table; saved with it."""
    picks = {point_key(r["pick"]): r["pick"] for replays in runs.values() for r in replays}
    todo = [(p, s) for p in picks.values() for s in table["train_seeds"]
            if "test_auilc_mae" not in table["entries"][f"{point_key(p)}|{s}"]]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(test_auilc, space, p, s): (p, s) for p, s in todo}
        for future in as_completed(futures):
            point, seed = futures[future]
            table["entries"][f"{point_key(point)}|{seed}"]["test_auilc_mae"] = future.result()
    _save(space, table)


def _save(space: TabularSpace, table: dict) -> None:
    tmp = space.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=0))
    os.replace(tmp, space.path)


def _median_epochs(reach: list) -> str:
    """Median over search seeds of the epochs to reach the target, a seed that never does counting as
    last; "-" when the median seed never does."""
    middle = sorted(reach, key=lambda r: float("inf") if r is None else r)[(len(reach) - 1) // 2]
    return "-" if middle is None else str(middle)


def markdown_table(summary: list[dict], fraction: float = 0.4) -> str:
    """The docs table: mean ± std over search seeds."""
    fmt = lambda a: f"{a.mean():.4f} ± {a.std(ddof=1):.4f}"  # noqa: E731
    budget = summary[0]["budget"]
    lines = [f"| method | TPE start-up | ASHA grace | plateau rule | trials (stopped) | epochs spent | best valid objective at "
             f"{fraction:.0%} of the grid's epochs | at 100% ({budget} epochs) | seeds reaching the grid's best by 40% / 100% | "
             "epochs to reach it (median) | test MAE AUILC of the pick |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary:
        reach = [r for r in row["reach"] if r is not None]
        early = sum(r <= fraction * budget for r in reach)
        median = _median_epochs(row["reach"])
        lines.append(f"| {row['method']} | {row['startup'] or '-'} | {row['grace'] or '-'} | {row['plateau'] or '-'} | {row['trials'].mean():.1f} ({row['stopped'].mean():.1f}) "
                     f"| {row['spent'].mean():.0f} | {fmt(row['at_fraction'])} | {fmt(row['at_end'])} | {early} / {len(reach)} of {len(row['reach'])} "
                     f"| {median} | {fmt(row['test_auilc'])} |")
    return "\n".join(lines)


def plot(runs: dict, title: str, path: Path, target: float, fraction: float = 0.4) -> None:
    """Best validation objective found vs epochs consumed: mean over search seeds, band = min..max
    (for the grid and the platform's default only, so the plot stays readable); dotted: the grid's best
    (mean + 1 std over train seeds) and `fraction` of the grid's epochs."""
    import numpy as np
    import plotly.colors
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = plotly.colors.qualitative.Dark24
    for (method, replays), colour in zip(runs.items(), colours):
        n = max(len(r["trace"]) for r in replays)
        traces = np.array([r["trace"] + [r["trace"][-1]] * (n - len(r["trace"])) for r in replays])
        x = np.arange(1, n + 1)
        if method in ("grid", DEFAULT_METHOD):
            fig.add_scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([traces.max(0), traces.min(0)[::-1]]),
                            fill="toself", fillcolor=colour, opacity=0.15, line={"width": 0}, showlegend=False,
                            hoverinfo="skip")
        fig.add_scatter(x=x, y=traces.mean(0), name=method, line={"color": colour, "width": 3 if method in (
            "grid", DEFAULT_METHOD) else 1.5})
    fig.add_hline(y=target, line={"dash": "dot", "color": "#444"}, annotation_text="grid's best (mean over train seeds + 1 std)")
    fig.add_vline(x=fraction * len(runs["grid"][0]["trace"]), line={"dash": "dot", "color": "#444"},
                  annotation_text=f"{fraction:.0%} of the grid's epochs")
    fig.update_layout(title=title, xaxis_title="epochs consumed", yaxis_title="best validation objective so far",
                      width=1000, height=560, template="plotly_white")
    lowest = min(r["trace"][-1] for replays in runs.values() for r in replays)  # some seeds end below the target
    fig.update_yaxes(range=[min(target, lowest) - 0.03, target + 0.2])
    fig.write_image(str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default=",".join(SPACES), help=f"comma-separated, of {sorted(SPACES)}")
    parser.add_argument("--jobs", type=int, default=2, help="table entries trained at once (one thread each)")
    parser.add_argument("--rebuild", action="store_true", help="retrain the tables even when stored")
    parser.add_argument("--table-only", action="store_true", help="build the tables, no replay")
    parser.add_argument("--search-seeds", type=int, default=30)
    parser.add_argument("--img", default=str(ROOT.parent / "docs" / "img"), help="where the plots go")
    args = parser.parse_args(argv)
    for name in args.spaces.split(","):
        space = SPACES[name]
        table = build_table(space, args.jobs, args.rebuild)
        if args.table_only:
            continue
        runs = run_replays(table, range(args.search_seeds))
        evaluate_picks(space, table, runs, args.jobs)
        summary = summarize_replays(table, runs)
        print(f"\n{name} on {space.dataset}, {space.epochs} epochs per trial, {len(space.points())} configs x "
              f"{len(space.train_seeds)} train seeds; {args.search_seeds} search seeds; grid's best per train seed "
              f"{', '.join(f'{g:.4f}' for g in summary[0]['grid_best'])}; reached on train seed k: within one std "
              f"of the grid's best on seed k ({', '.join(f'{t:.4f}' for t in summary[0]['targets'].values())})\n")
        print(markdown_table(summary))
        path = Path(args.img) / f"search-{name}.png"
        plot(runs, f"{name}: best validation objective vs epochs ({args.search_seeds} search seeds, band = min..max)",
             path, summary[0]["target"])
        print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
