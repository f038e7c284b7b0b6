"""`make bench-peers`: our `mult` against MMSA's MulT on the same MMSA-format file, in one run.

Both train MulT at MMSA's MOSI width and depth (d 50, 10 heads, 4 cross-modal levels, 3
self-attention levels, Conv1D kernel 5, batch 16, Adam lr 2e-3, one optimiser step per batch) for
the same epochs with the same intra-op threads, each in its own process (MMSA from `.venv-peers`
through `benchmarks/mmsa_runner.py`, ours from this environment), alternating: for each repeat
ours (attention dropout 0.1: `layers.chunked_dropout_attention` on the CPU), MMSA, ours (no
attention dropout: torch's fused flash kernel) and, with `--buckets K`, ours with dropout 0.1 and
length-bucketed batches (`length_buckets=K`; it changes nothing while the train split is one batch). Reported per tool: training samples/s (training passes only, validation
excluded) per wall second and per process CPU second (the robust figure on a shared
machine: other processes steal wall time, not CPU time), process peak RSS, test MAE of the checkpoint its validation selected, parameters;
and each of ours as a ratio to MMSA (medians over repeats).

    python -m benchmarks.peers [--train 48 --epochs 2 --threads 1 --repeats 1 --buckets 3]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", ROOT / ".venv-peers" / "bin" / "python"))
"""The peer environment's interpreter (`make bench-peers` creates it; PEERS_PYTHON overrides)."""
MULT_AT_MMSA_WIDTH = {"hidden": 50, "heads": 10, "layers": 4, "self_layers": 3, "kernel_size": 5,
                      "embed_dropout": 0.2}
"""Our MulT at MMSA's MOSI settings (dst_feature_dim_nheads [50, 10], nlevels 4, 3 memory
layers, conv1d kernels 5, embed_dropout 0.2); `dropout` is set per variant."""
VARIANTS = {"ours, dropout 0.1": (0.1, 0), "ours, dropout 0": (0.0, 0)}
"""Our runs: name -> (dropout, length_buckets); `--buckets K` adds "ours, 0.1, buckets K"."""


def run_ours(file: str, epochs: int, threads: int, dropout: float, seed: int, buckets: int = 0) -> dict:
    """Train our `mult` on the MMSA file; the same fields as mmsa_runner prints."""
    import torch

    from affectune.data import load
    from affectune.loader import preload
    from affectune.train import load_checkpoint, predict_split, score, train_loop

    torch.set_num_threads(threads)
    dataset = load(f"mmsa:{file}")
    with tempfile.TemporaryDirectory() as ckpt:
        out = train_loop({
            "model": "mult", "model_config": {**MULT_AT_MMSA_WIDTH, "dropout": dropout},
            "dataset": f"mmsa:{file}", "seed": seed, "epochs": epochs, "batch_size": 16,
            "eval_batch_size": 16, "lr": 2e-3, "patience": None, "select_metric": "val_mae",
            "num_threads": threads, "checkpoint_dir": ckpt, "length_buckets": buckets,
        }, dataset=dataset)
        model, _ = load_checkpoint(out.checkpoint_path)
    test = preload(dataset, "test")
    mae = score("regression", test, predict_split(model, test, 16), 0)["mae"]
    seconds = sum(h["train_time_s"] for h in out.history)
    samples = len(dataset.splits["train"].ids) * out.epochs_run
    return {"tool": "ours", "epochs": out.epochs_run, "train_samples": samples, "train_seconds": seconds,
            "samples_per_s": samples / seconds, "test_mae": mae,
            "samples_per_cpu_s": samples / sum(h["train_cpu_s"] for h in out.history), "parameters": out.num_parameters,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def subprocess_json(cmd: list[str], log: Path) -> dict:
    """Run cmd, keep its stderr in `log`, return the JSON object on its last stdout line."""
    with open(log, "w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}); stderr tail:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(a, work: Path) -> dict[str, list[dict]]:
    """The interleaved runs: per repeat ours (dropout 0.1), MMSA, ours (dropout 0)[, ours bucketed]."""
    variants = dict(VARIANTS) | ({f"ours, 0.1, buckets {a.buckets}": (0.1, a.buckets)} if a.buckets else {})
    runs: dict[str, list[dict]] = {name: [] for name in ("MMSA MulT", *variants)}
    common = [a.file, "--epochs", str(a.epochs), "--threads", str(a.threads)]
    for r in range(a.repeats):
        for name in ("ours, dropout 0.1", "MMSA MulT", *list(variants)[1:]):
            if name == "MMSA MulT":
                cmd = [str(PEERS_PYTHON), str(ROOT / "benchmarks" / "mmsa_runner.py"), *common,
                       "--out", str(work / f"mmsa-{r}")]
            else:
                dropout, buckets = variants[name]
                cmd = [sys.executable, "-m", "benchmarks.peers", "ours", *common, "--dropout", str(dropout),
                       "--buckets", str(buckets)]
            result = subprocess_json(cmd, work / f"{name.replace(' ', '_').replace(',', '')}-{r}.log")
            print(f"  repeat {r + 1}: {name:24s} {result['samples_per_cpu_s']:6.2f} samples/CPU-s "
                  f"({result['samples_per_s']:6.2f}/s wall), "
                  f"peak RSS {result['peak_rss_mb']:7.0f} MB, test MAE {result['test_mae']:.3f}", flush=True)
            runs[name].append(result)
    return runs


def report(runs: dict[str, list[dict]]) -> str:
    keys = ("samples_per_cpu_s", "samples_per_s", "peak_rss_mb", "test_mae")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} | {"parameters": rs[0]["parameters"]}
           for name, rs in runs.items()}
    ref = med["MMSA MulT"]
    lines = [f"{'':24s} {'samples/CPU-s':>13s} {'x MMSA':>7s} {'samples/s':>9s} {'x MMSA':>7s} "
             f"{'peak RSS MB':>11s} {'x MMSA':>7s} {'test MAE':>8s} {'params':>9s}"]
    for name, m in med.items():
        lines.append(f"{name:24s} {m['samples_per_cpu_s']:13.2f} {m['samples_per_cpu_s'] / ref['samples_per_cpu_s']:7.2f} "
                     f"{m['samples_per_s']:9.2f} {m['samples_per_s'] / ref['samples_per_s']:7.2f} "
                     f"{m['peak_rss_mb']:11.0f} {m['peak_rss_mb'] / ref['peak_rss_mb']:7.2f} "
                     f"{m['test_mae']:8.3f} {m['parameters']:9d}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    ours = sub.add_parser("ours", help="one run of our mult (used by the benchmark itself)")
    ours.add_argument("file")
    ours.add_argument("--dropout", type=float, required=True)
    for p in (ap, ours):
        p.add_argument("--epochs", type=int, default=2)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--buckets", type=int, default=0, help="length_buckets of the bucketed run (0: none)")
    ap.add_argument("--train", type=int, default=48, help="train samples (valid 16, test 32)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "ours":
        print(json.dumps(run_ours(a.file, a.epochs, a.threads, a.dropout, seed=0, buckets=a.buckets)))
        return
    if not PEERS_PYTHON.exists():
        sys.exit(f"{PEERS_PYTHON} is missing: `make bench-peers` creates it (torch, then MMSA from PyPI)")
    from benchmarks.mmsa_file import write_mosi_like

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a.file = str(work / "unaligned_mosi_like.pkl")
        fill = write_mosi_like(a.file, a.train, 16, 32, a.seed)
        print(f"MOSI-shaped unaligned MMSA file: {a.train}/16/32 samples, text 50x768, audio 375x5, "
              f"vision 500x20; mean length / padded: " + ", ".join(f"{m} {v:.2f}" for m, v in fill.items()))
        print(f"{a.epochs} epochs, batch 16, {a.threads} thread(s), {a.repeats} repeat(s), interleaved:", flush=True)
        print(report(measure(a, work)))


if __name__ == "__main__":
    main()
