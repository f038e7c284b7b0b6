"""Scaling benchmarks: how cost grows with dataset size and trial count, what torch.compile buys on
the CPU, and how big each model's training step is (the numbers behind the fractional-GPU advice
in docs/performance.md).

(a) Dataset size: synthetic MOSEI at several scales, each point in a fresh subprocess (so peak
    RSS is that point's own): one epoch of `train_loop` (samples/s over the optimisation phase,
    wall and process CPU) and peak RSS after loading, after training and after the robustness
    grid (`affectune.evaluate.robustness`, one mask seed), with the grid's time.
(b) Trial count: study search wall time at fixed concurrency for growing trial counts (the
    runner of benchmarks/study_overhead.py); the slope of a least-squares line is the cost
    per trial, its intercept the fixed cost of a study.
(c) torch.compile against eager, same model, data and seed, each in a fresh subprocess with an
    empty inductor cache: the first epoch (compilation included) and the steady epochs.
(d) Model sizes: parameters, training FLOPs per sample, aten ops per optimiser step and the
    activations autograd keeps for the backward pass, per registered model at its defaults.

    python -m benchmarks.scaling [--quick] [--skip-study] [--skip-compile] [--no-plots]
Plots go to docs/img/scaling_*.svg. Needs Ray for (b); run it under `flock /tmp/affectune-ray.lock`
on a shared machine. Ratios taken within one run are the figures to trust on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
SIZE_MODEL = ("late_fusion", {"hidden": 32})
COMPILE_MODELS = {"late_fusion": {"hidden": 32}, "dqf": {"hidden": 32, "layers": 1}}
STEP_BATCH = 32


def peak_rss_mb() -> float:
    """Peak resident set of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_config(source: str, model: str, model_config: dict, epochs: int, **extra) -> dict:
    return {"dataset": source, "model": model, "model_config": model_config, "epochs": epochs,
            "batch_size": STEP_BATCH, "lr": 1e-3, "patience": None, "num_threads": 1, **extra}


# --------------------------------------------------------------------------- child processes
def size_point(scale: float, model: str, model_config: dict, epochs: int) -> dict:
    """One dataset-size point (runs in its own process): load, train, robustness grid."""
    import numpy as np

    from affectune.data import load
    from affectune.evaluate import robustness
    from affectune.models import build_model
    from affectune.train import seed_everything, train_loop

    source = f"synthetic:mosei?scale={scale}"
    started = time.perf_counter()
    dataset = load(source)
    out = {"scale": scale, "load_s": time.perf_counter() - started, "rss_load_mb": peak_rss_mb(),
           "train": len(dataset.splits["train"]), "test": len(dataset.splits["test"]),
           "data_mb": sum(a.nbytes for s in dataset.splits.values() for a in vars(s).values()
                          if isinstance(a, np.ndarray)) / 2**20}
    history = train_loop(_train_config(source, model, model_config, epochs), dataset=dataset).history
    samples = out["train"] * epochs
    out.update(train_sps_wall=samples / sum(e["train_time_s"] for e in history),
               train_sps_cpu=samples / sum(e["train_cpu_s"] for e in history), rss_train_mb=peak_rss_mb())
    seed_everything(0)
    net = build_model(model, model_config, dataset.spec())  # grid cost does not depend on the weights
    wall, cpu = time.perf_counter(), time.process_time()
    grid = robustness(net, dataset, seeds=(0,))
    out.update(grid_wall_s=time.perf_counter() - wall, grid_cpu_s=time.process_time() - cpu,
               grid_passes=grid.forward_passes, rss_grid_mb=peak_rss_mb())
    return out


def compile_point(model: str, model_config: dict, compiled: bool, scale: float, epochs: int) -> dict:
    """Per-epoch times of one run, eager or compiled (its own process and inductor cache)."""
    from affectune.data import load
    from affectune.train import train_loop

    source = f"synthetic:mosi?scale={scale}"
    dataset = load(source)
    cfg = _train_config(source, model, model_config, epochs, compile=compiled)
    history = train_loop(cfg, dataset=dataset).history
    return {"model": model, "compiled": compiled, "train": len(dataset.splits["train"]),
            "epoch_wall_s": [e["epoch_time_s"] for e in history], "train_wall_s": [e["train_time_s"] for e in history],
            "train_cpu_s": [e["train_cpu_s"] for e in history]}


def run_child(kind: str, timeout: float, **params) -> dict:
    """Run one point in a fresh interpreter; its last stdout line is the JSON result."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with tempfile.TemporaryDirectory(prefix="affectune-inductor-") as cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache  # compile from scratch every time, as a new trial would
        command = [sys.executable, "-m", "benchmarks.scaling", "--child", json.dumps({"kind": kind, **params})]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} point {params} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child_main(payload: str) -> None:
    import torch

    torch.set_num_threads(1)
    params = json.loads(payload)
    kind = params.pop("kind")
    result = {"size": size_point, "compile": compile_point}[kind](**params)
    print(json.dumps(result))


# --------------------------------------------------------------------------- (a) dataset size
def bench_sizes(scales, epochs: int) -> list[dict]:
    model, model_config = SIZE_MODEL
    rows = [run_child("size", 1800, scale=s, model=model, model_config=model_config, epochs=epochs) for s in scales]
    base = rows[0]
    print(f"(a) dataset size: synthetic:mosei, {model} {model_config}, {epochs} epoch(s), batch {STEP_BATCH}, "
          "1 thread, one fresh process per point")
    print(f"    {'scale':>5} {'train':>6} {'data MiB':>8} {'samples/s wall':>14} {'cpu':>7} {'RSS load':>8} "
          f"{'RSS train':>9} {'RSS grid':>8} {'grid s':>7} {'grid cpu s':>10} {'test':>5} {'us/sample-pass':>14}")
    for r in rows:
        per_pass = 1e6 * r["grid_cpu_s"] / (r["grid_passes"] * r["test"])
        r["grid_us_per_sample_pass"] = per_pass
        print(f"    {r['scale']:>5} {r['train']:>6} {r['data_mb']:>8.0f} {r['train_sps_wall']:>14.0f} "
              f"{r['train_sps_cpu']:>7.0f} {r['rss_load_mb']:>8.0f} {r['rss_train_mb']:>9.0f} {r['rss_grid_mb']:>8.0f} "
              f"{r['grid_wall_s']:>7.1f} {r['grid_cpu_s']:>10.1f} {r['test']:>5} {per_pass:>14.1f}")
    last = rows[-1]
    print(f"    from scale {base['scale']} to {last['scale']} ({last['train'] / base['train']:.1f}x the samples): "
          f"samples/s (cpu) x{last['train_sps_cpu'] / base['train_sps_cpu']:.2f}, "
          f"peak RSS x{last['rss_grid_mb'] / base['rss_grid_mb']:.2f} "
          f"(+{last['rss_grid_mb'] - base['rss_grid_mb']:.0f} MiB "
          f"for +{last['data_mb'] - base['data_mb']:.0f} MiB of arrays), "
          f"grid cpu s x{last['grid_cpu_s'] / base['grid_cpu_s']:.2f}")
    return rows


# --------------------------------------------------------------------------- (b) trial count
def least_squares(xs, ys) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the points."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def _start_ray(ray, init_ray, attempts: int = 3) -> None:
    """The raylet must register within a hard-coded 30 s (ray/_private/node.py:427-444), which a
    heavily loaded machine does not always manage: try again before giving up."""
    for attempt in range(1, attempts + 1):
        try:
            init_ray(None, num_cpus=2, log_to_driver=False)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception here
            print(f"    Ray did not start (attempt {attempt}/{attempts}): {err}", flush=True)
            ray.shutdown()
            if attempt == attempts:
                raise


def bench_trials(counts, concurrency: int, epochs: int) -> dict:
    import ray

    from benchmarks.study_overhead import platform_study
    from affectune.studies import init_ray

    own = not ray.is_initialized()
    if own:
        _start_ray(ray, init_ray)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="affectune-bench-") as tmp:
            platform_study(1, epochs, os.path.join(tmp, "store"), "in_process", "warmup", max_concurrent=1)
            for n in counts:
                wall, result = platform_study(n, epochs, os.path.join(tmp, "store"), "in_process", f"trials-{n}",
                                              max_concurrent=concurrency)
                rows.append({"trials": n, "search_wall_s": wall,
                             "train_s_mean": float(result.trials["wall_time_s"].mean())})
    finally:
        if own:
            ray.shutdown()
    slope, intercept = least_squares([r["trials"] for r in rows], [r["search_wall_s"] for r in rows])
    print(f"(b) study search wall time against trial count, {concurrency} concurrent trials, dqf hidden 12, "
          f"{epochs} epoch(s) on synthetic:mosi?scale=0.05, in_process trials")
    print(f"    {'trials':>6} {'search s':>9} {'s/trial':>8} {'train_loop s/trial':>18} {'search / ideal':>14}")
    for r in rows:  # ideal: the trials' own training, `concurrency` at a time (robust to load swings between studies)
        r["over_ideal"] = r["search_wall_s"] / (r["trials"] * r["train_s_mean"] / concurrency)
        print(f"    {r['trials']:>6} {r['search_wall_s']:>9.1f} {r['search_wall_s'] / r['trials']:>8.2f} "
              f"{r['train_s_mean']:>18.2f} {r['over_ideal']:>14.2f}")
    print(f"    least squares: {slope:.2f} s per extra trial + {intercept:.1f} s fixed")
    return {"concurrency": concurrency, "epochs": epochs, "rows": rows, "slope_s": slope, "intercept_s": intercept}


# --------------------------------------------------------------------------- (c) torch.compile
def bench_compile(models, scale: float, epochs: int) -> list[dict]:
    """Eager then compiled, per model; each run a fresh process with a cold inductor cache."""
    print(f"(c) torch.compile (train config `compile: true`) against eager on the CPU, synthetic:mosi?scale={scale}, "
          f"{epochs} epochs, 1 thread, fresh process and empty inductor cache per run")
    print(f"    {'model':<12} {'epoch 1 wall s eager / compiled':>32} {'steady train cpu s eager / compiled':>36} "
          f"{'ratio cpu':>9} {'ratio wall':>10} {'break-even':>10}")
    rows = []
    for name in models:
        runs = {mode: run_child("compile", 3600, model=name, model_config=COMPILE_MODELS[name],
                                compiled=mode == "compiled", scale=scale, epochs=epochs)
                for mode in ("eager", "compiled")}
        rows.append(_compile_row(name, runs))
    return rows


def _compile_row(name: str, runs: dict) -> dict:
    """Ratios of the steady epochs (2..n) and the epochs after which compiling has paid for itself."""
    e, c = runs["eager"], runs["compiled"]
    cpu = {k: statistics.median(r["train_cpu_s"][1:]) for k, r in runs.items()}
    wall = {k: statistics.median(r["train_wall_s"][1:]) for k, r in runs.items()}
    first_extra = c["epoch_wall_s"][0] - e["epoch_wall_s"][0]
    saving = wall["eager"] - wall["compiled"]
    row = {"model": name, "model_config": COMPILE_MODELS[name], "train": e["train"], **runs,
           "steady_cpu_ratio": cpu["compiled"] / cpu["eager"], "steady_wall_ratio": wall["compiled"] / wall["eager"],
           "first_epoch_extra_s": first_extra, "break_even_epochs": first_extra / saving if saving > 0 else None}
    be = f"{row['break_even_epochs']:.0f} ep" if row["break_even_epochs"] else "never"
    print(f"    {name:<12} {e['epoch_wall_s'][0]:>15.1f} / {c['epoch_wall_s'][0]:<14.1f} {cpu['eager']:>18.2f} / "
          f"{cpu['compiled']:<15.2f} {row['steady_cpu_ratio']:>9.2f} {row['steady_wall_ratio']:>10.2f} {be:>10}",
          flush=True)
    return row


# --------------------------------------------------------------------------- (d) model sizes
def _count_saved_bytes(run_forward, params) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves for the backward pass."""
    import torch

    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run_forward()
    return sum(seen.values())


def step_profile(name: str, dataset) -> dict:
    """One optimiser step of `name` at its defaults on a batch of STEP_BATCH train samples."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from affectune.loader import preload
    from affectune.models import build_model
    from affectune.models.base import FitContext
    from affectune.train import TrainConfig, seed_everything

    class CountOps(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountOps.count += 1
            return func(*args, **(kwargs or {}))

    seed_everything(0)
    train = preload(dataset, "train")
    model = build_model(name, {}, dataset.spec())
    config = TrainConfig.from_dict(_train_config(dataset.source, name, {}, 1)).to_dict()
    with torch.no_grad():
        model.on_fit_start(FitContext(train=train, spec=model.spec, config=config, dataset_name=dataset.source))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, gen = train.batch(slice(0, STEP_BATCH)), torch.Generator().manual_seed(0)

    def losses():
        views = model.train_policy(batch, gen)
        return [model.training_losses(views, s)["loss"] for s in range(model.steps_per_batch)]

    def step():
        views = model.train_policy(batch, gen)
        for s in range(model.steps_per_batch):
            opt.zero_grad(set_to_none=True)
            model.training_losses(views, s)["loss"].backward()
            opt.step()

    model.train()
    step()  # warm-up: optimiser state, lazy buffers
    with FlopCounterMode(display=False) as flops, CountOps():
        step()
    saved = _count_saved_bytes(losses, list(model.parameters()))
    cpu = []
    for _ in range(3):
        start = time.process_time()
        step()
        cpu.append(time.process_time() - start)
    return {"model": name, "params": model.num_parameters(),
            "train_flops_per_sample": flops.get_total_flops() / STEP_BATCH,
            "ops_per_step": CountOps.count, "saved_mb": saved / 2**20, "step_cpu_ms": 1e3 * statistics.median(cpu),
            "steps_per_batch": model.steps_per_batch}


def dispatch_overhead_us(n: int = 20000) -> float:
    """Process CPU microseconds per eager op on a one-element tensor: the host-side floor of any op."""
    import torch

    x = torch.zeros(1)
    start = time.process_time()
    for _ in range(n):
        x.add_(1.0)
    return 1e6 * (time.process_time() - start) / n


def bench_models() -> dict:
    import torch

    from affectune.data import load
    from affectune.models import list_models

    torch.set_num_threads(1)
    dataset = load("synthetic:mosi")
    rows = [step_profile(name, dataset) for name in list_models()]
    floor_us = dispatch_overhead_us()
    print(f"(d) one optimiser step per model at its defaults, synthetic:mosi, batch {STEP_BATCH}, 1 thread "
          f"(host-side cost of one eager op here: {floor_us:.1f} us of CPU)")
    print(f"    {'model':<12} {'params':>9} {'train MFLOP/sample':>18} {'GFLOP/step':>10} {'aten ops/step':>13} "
          f"{'saved act. MiB':>14} {'CPU ms/step':>11} {'GFLOP/s':>7} {'op floor ms':>11}")
    for r in rows:
        step_gflop = r["train_flops_per_sample"] * STEP_BATCH / 1e9
        r["op_floor_ms"] = r["ops_per_step"] * floor_us / 1e3
        print(f"    {r['model']:<12} {r['params']:>9,} {r['train_flops_per_sample'] / 1e6:>18.1f} {step_gflop:>10.2f} "
              f"{r['ops_per_step']:>13} {r['saved_mb']:>14.1f} {r['step_cpu_ms']:>11.0f} "
              f"{step_gflop / (r['step_cpu_ms'] / 1e3):>7.1f} {r['op_floor_ms']:>11.1f}")
    return {"dispatch_us": floor_us, "rows": rows}


# --------------------------------------------------------------------------- plots
def plot_sizes(rows: list[dict], path: Path) -> None:
    from plotly.subplots import make_subplots

    n = [r["train"] for r in rows]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("train samples/s (1 epoch)", "peak RSS (MiB)",
                                                        "robustness grid (s, 1 mask seed)"))
    fig.add_scatter(x=n, y=[r["train_sps_cpu"] for r in rows], name="samples/s per CPU-second", row=1, col=1)
    fig.add_scatter(x=n, y=[r["train_sps_wall"] for r in rows], name="samples/s wall", row=1, col=1)
    for key, label in (("rss_load_mb", "after loading"), ("rss_train_mb", "after training"),
                       ("rss_grid_mb", "after grid")):
        fig.add_scatter(x=n, y=[r[key] for r in rows], name=f"RSS {label}", row=1, col=2)
    fig.add_scatter(x=n, y=[r["data_mb"] for r in rows], name="dataset arrays", line={"dash": "dot"}, row=1, col=2)
    fig.add_scatter(x=n, y=[r["grid_cpu_s"] for r in rows], name="grid CPU s", row=1, col=3)
    fig.add_scatter(x=n, y=[r["grid_wall_s"] for r in rows], name="grid wall s", row=1, col=3)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="train samples (test = 0.29x)" if col == 3 else "train samples", row=1, col=col)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(title="Cost against dataset size: synthetic MOSEI, late_fusion", width=1300, height=420)
    _write(fig, path)


def plot_trials(result: dict, path: Path) -> None:
    import plotly.graph_objects as go

    xs = [r["trials"] for r in result["rows"]]
    fig = go.Figure()
    fig.add_scatter(x=xs, y=[r["search_wall_s"] for r in result["rows"]], mode="markers+lines", name="measured")
    fit = [result["intercept_s"] + result["slope_s"] * x for x in (0, max(xs))]
    fig.add_scatter(x=[0, max(xs)], y=fit, mode="lines", line={"dash": "dot"},
                    name=f"{result['slope_s']:.1f} s/trial + {result['intercept_s']:.0f} s")
    fig.update_layout(title=f"Study search wall time, {result['concurrency']} concurrent trials",
                      xaxis_title="trials", yaxis_title="search wall time (s)", width=700, height=420)
    fig.update_yaxes(rangemode="tozero")
    _write(fig, path)


def _write(fig, path: Path) -> None:
    try:
        fig.write_image(str(path))
        print(f"    plot: {path.relative_to(IMG.parents[1])}")
    except Exception as err:  # kaleido needs a Chrome/Chromium (`make browser`); the tables stand alone
        print(f"    plot {path.name} not written: {type(err).__name__}: {err}")


# --------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller scales, fewer trials, one compiled model")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run these sections only (default: all)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child_main(args.child)
        return {}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(f"scaling benchmarks; load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          f"(ratios within this run are what to compare)")
    results: dict = {"load_start": os.getloadavg(), "quick": args.quick}
    for section in args.only:
        print()
        results[section] = SECTIONS[section](args.quick, not args.no_plots)
    results["load_end"] = os.getloadavg()
    print(f"\nload average at end {results['load_end'][0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return results


def _sizes(quick: bool, plots: bool) -> list[dict]:
    rows = bench_sizes((0.03, 0.1, 0.3) if quick else (0.1, 0.3, 1.0), epochs=1)
    if plots:
        plot_sizes(rows, IMG / "scaling_dataset.svg")
    return rows


def _trials(quick: bool, plots: bool) -> dict:
    result = bench_trials((2, 4) if quick else (2, 4, 8), concurrency=2, epochs=1)
    if plots:
        plot_trials(result, IMG / "scaling_trials.svg")
    return result


SECTIONS = {"sizes": _sizes, "trials": _trials,
            "compile": lambda quick, _plots: bench_compile(["late_fusion"] if quick else list(COMPILE_MODELS),
                                                           scale=0.1, epochs=3),
            "models": lambda _quick, _plots: bench_models()}


if __name__ == "__main__":
    main()
