"""`python -m benchmarks`: the platform's overheads as ratios against bare PyTorch.

(a) Training throughput (samples/s) of `affectune.train.train_loop` against a bare loop on the
    same model, data tensors, train-time policy and optimiser: a plain for-loop over slices of a
    seeded permutation plus the optimiser step. Reported for the optimisation phase alone and
    end to end per epoch, where the bare loop also forwards the two validation sets and scores
    them (the platform additionally writes checkpoints).
(b) The robustness grid: `affectune.evaluate.robustness` against the same number of bare forward
    passes over pre-built test tensors.
(c) Search efficiency (benchmarks/search.py): grid, random, TPE and TPE + ASHA replayed over
    tabulated learning curves.
Each measurement is warmed up once and repeated; platform and bare runs alternate and the median
of the per-pair ratios is reported, for process CPU time (robust on a shared machine: other
processes steal wall time, not our CPU time) and for wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from affectune.batch import Batch
from affectune.data import load
from affectune.evaluate import robustness
from affectune.loader import preload
from affectune.metrics import compute_metrics
from affectune.models import build_model
from affectune.train import TrainConfig, masked_validation, seed_everything, train_loop


def bare_training(cfg: dict, dataset, epochs: int) -> dict[str, float]:
    """Seconds (wall and CPU) of a hand-written loop doing the same work, per phase."""
    tc = TrainConfig.from_dict(cfg)
    seed_everything(tc.seed)
    train = preload(dataset, "train")
    model = build_model(tc.model, dict(tc.model_config), dataset.spec())
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    gen = torch.Generator().manual_seed(tc.seed)
    valid = preload(dataset, "valid")
    sets = [valid, masked_validation(valid, tc)]
    x, v, y = train.features, train.valid, train.label
    n, bs = len(train), tc.batch_size
    t = dict.fromkeys(("opt_wall", "opt_cpu", "all_wall", "all_cpu"), 0.0)
    for _ in range(epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            valid_b = {m: v[m][idx] for m in v}
            batch = Batch(text=x["text"][idx], audio=x["audio"][idx], vision=x["vision"][idx], valid=valid_b,
                          dropped={m: torch.zeros_like(t) for m, t in valid_b.items()}, label=y[idx], index=idx,
                          tokens=None if train.tokens is None else train.tokens[idx])
            views = model.train_policy(batch, gen)
            for step in range(model.steps_per_batch):
                loss = model.training_losses(views, step)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        t["opt_wall"] += time.perf_counter() - wall
        t["opt_cpu"] += time.process_time() - cpu
        model.eval()
        with torch.inference_mode():
            for data in sets:
                pred = torch.cat([model.predict(b).reshape(len(b.label), -1) for b in data.batches(tc.eval_batch_size)])
                compute_metrics(dataset.task, data.label.numpy(), pred[:, 0].numpy() if dataset.task == "regression"
                                else pred.numpy())
        t["all_wall"] += time.perf_counter() - wall
        t["all_cpu"] += time.process_time() - cpu
    return t


def platform_training(cfg: dict, dataset) -> dict[str, float]:
    h = train_loop(cfg, dataset=dataset).history
    return {"opt_wall": sum(e["train_time_s"] for e in h), "opt_cpu": sum(e["train_cpu_s"] for e in h),
            "all_wall": sum(e["epoch_time_s"] for e in h), "all_cpu": sum(e["epoch_cpu_s"] for e in h)}


def bench_training(name: str, cfg: dict, dataset, repeats: int) -> None:
    """Platform and bare runs alternate; the ratio of each pair is taken, then the median."""
    n = len(dataset.splits["train"]) * cfg["epochs"]
    platform_training({**cfg, "epochs": 1}, dataset)  # warm-up (allocator, lazy imports)
    bare_training(cfg, dataset, 1)
    pairs = [(platform_training(cfg, dataset), bare_training(cfg, dataset, cfg["epochs"])) for _ in range(repeats)]
    print(f"[train] {name}: {n} samples per run, {repeats} alternating pairs, medians")
    for phase, label in (("opt", "optimisation phase"), ("all", "per epoch incl. validation")):
        for clock in ("cpu", "wall"):
            key = f"{phase}_{clock}"
            p = statistics.median(pl[key] for pl, _ in pairs)
            b = statistics.median(ba[key] for _, ba in pairs)
            ratio = statistics.median(ba[key] / pl[key] for pl, ba in pairs)
            print(f"  {label:<27} {clock:>4}: platform {n / p:8.1f} samples/s   bare {n / b:8.1f} samples/s   "
                  f"ratio {ratio:.3f}")


def bench_grid(name: str, model, dataset, repeats: int, seeds=(0, 1, 2), batch_size: int = 1024) -> None:
    """robustness() against as many bare forward passes as it needed, alternating, CPU and wall time."""
    model.eval()
    test = preload(dataset, "test")

    def bare(passes: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for _ in range(passes):
                for b in test.batches(batch_size):
                    model.predict(b)
        return time.process_time() - cpu, time.perf_counter() - wall

    result = robustness(model, dataset, seeds=(0,), batch_size=batch_size)  # warm-up
    bare(2)
    pairs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = robustness(model, dataset, seeds=seeds, batch_size=batch_size)
        grid = (time.process_time() - cpu, time.perf_counter() - wall)
        pairs.append((grid, bare(result.forward_passes)))
    rows = len(result.curves) // len(result.complete)
    print(f"[grid] {name}: {rows} (cell, seed) rows incl. inter, {result.forward_passes} distinct forward passes "
          f"over {len(test)} samples, {repeats} alternating pairs, medians")
    for k, clock in enumerate(("cpu", "wall")):
        g = statistics.median(gr[k] for gr, _ in pairs)
        f = statistics.median(ba[k] for _, ba in pairs)
        ratio = statistics.median(gr[k] / ba[k] for gr, ba in pairs)
        print(f"  {clock:>4}: robustness() {g:7.2f}s   bare forward passes {f:7.2f}s   ratio (grid / bare) {ratio:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer epochs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scale = 0.25 if args.quick else 1.0
    source = f"synthetic:mosi?scale={scale}"
    dataset = load(source)
    base = {"dataset": source, "epochs": 2 if args.quick else 3, "batch_size": 32, "lr": 1e-3, "patience": None,
            "num_threads": args.threads}
    print(f"benchmarks on {source} (train {len(dataset.splits['train'])}, test {len(dataset.splits['test'])}), "
          f"torch threads {args.threads}\n")
    lf = {**base, "model": "late_fusion", "model_config": {"hidden": 32}}
    dqf = {**base, "model": "dqf", "model_config": {"hidden": 32, "layers": 1}, "epochs": 1}
    bench_training("late_fusion hidden 32 (cheap model: loop overhead shows most)", lf, dataset, args.repeats)
    bench_training("dqf hidden 32, 1 layer", dqf, dataset, max(1, args.repeats - 1))
    print()
    seed_everything(0)
    bench_grid("late_fusion hidden 32", build_model("late_fusion", {"hidden": 32}, dataset.spec()), dataset,
               args.repeats)
    bench_grid("dqf hidden 32, 1 layer (1 mask seed)", build_model("dqf", {"hidden": 32, "layers": 1}, dataset.spec()),
               dataset, max(1, args.repeats - 1), seeds=(0,))
    print("\nstudies on Ray: per-trial overhead and search efficiency (benchmarks/study_overhead.py)")
    from benchmarks import study_overhead

    study_overhead.main(["--trials", "2", "--skip-search"] if args.quick else [])
    print("\nsearch efficiency: grid, random, TPE, TPE + ASHA on stored tables (benchmarks/search.py)")
    from benchmarks import search

    search.main([])  # replays the committed tables; trains only entries missing from them
    print("\nscaling: dataset size, trial count, torch.compile, model sizes (benchmarks/scaling.py)")
    from benchmarks import scaling

    scaling.main(["--quick"] if args.quick else [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
