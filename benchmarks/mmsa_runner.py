"""Train MMSA's MulT through MMSA's own entry point (`MMSA_run`) on CPU; print one JSON line.

Runs in the peer virtual environment (`.venv-peers`, see `make bench-peers`), never in ours, and
imports nothing from affectune. MMSA 2.2.1 needs run-time shims on CPU with current torch; they
are applied here, MMSA's files are never edited:
  * `torch.cuda.set_device` is a no-op for a CPU device (MMSA_run calls it unconditionally);
  * `ReduceLROnPlateau(verbose=...)`: the argument was removed from torch, so it is dropped;
  * an epoch budget: MMSA trains until early stopping; the train loader is wrapped so that the
    epoch after the last budgeted one ends training (after that epoch's validation and
    checkpoint), then MMSA loads its best checkpoint and tests as usual. The same wrapper times
    each epoch's training pass (first batch requested to the loader exhausted), in wall and
    process CPU seconds.

    python benchmarks/mmsa_runner.py FILE.pkl --epochs 2 --threads 1 --out DIR
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


class BudgetReached(Exception):
    """Raised by the train loader when the epoch budget is spent."""


class BudgetedLoader:
    """Wraps MMSA's train DataLoader: times each pass; the pass after `epochs` raises BudgetReached."""

    def __init__(self, loader, epochs: int):
        self.loader, self.epochs, self.seconds, self.cpu_seconds, self.samples = loader, epochs, [], [], 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        if len(self.seconds) >= self.epochs:
            raise BudgetReached
        start, cpu = time.perf_counter(), time.process_time()
        for batch in self.loader:
            self.samples += len(batch["labels"]["M"])
            yield batch
        self.seconds.append(time.perf_counter() - start)
        self.cpu_seconds.append(time.process_time() - cpu)


def install_shims(mmsa_run, mmsa_mult, torch, epochs: int, captured: dict) -> None:
    """The run-time patches described in the module docstring (module attributes only)."""
    set_device = torch.cuda.set_device
    torch.cuda.set_device = lambda d: None if torch.device(d).type == "cpu" else set_device(d)

    class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def __init__(self, *args, verbose=None, **kw):  # noqa: ARG002 (removed from torch)
            super().__init__(*args, **kw)

    mmsa_mult.ReduceLROnPlateau = ReduceLROnPlateau

    make_loaders = mmsa_run.MMDataLoader

    def budgeted_loaders(args, num_workers):
        loaders = make_loaders(args, num_workers)
        loaders["train"] = captured["train"] = BudgetedLoader(loaders["train"], epochs)
        return loaders

    mmsa_run.MMDataLoader = budgeted_loaders
    do_train = mmsa_mult.MULT.do_train

    def do_train_within_budget(self, model, dataloader, return_epoch_results=False):
        captured["parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        try:
            return do_train(self, model, dataloader, return_epoch_results)
        except BudgetReached:
            return None

    mmsa_mult.MULT.do_train = do_train_within_budget
    run_one = mmsa_run._run

    def run_and_capture(*args, **kw):
        captured["test"] = result = run_one(*args, **kw)
        return result

    mmsa_run._run = run_and_capture


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="MMSA-format pickle (benchmarks/mmsa_file.py writes one)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument("--out", required=True, help="directory for MMSA's logs, checkpoint and CSV")
    ap.add_argument("--config", default="{}", help="JSON overrides of MMSA's MulT config")
    a = ap.parse_args(argv)

    import importlib

    import torch

    torch.set_num_threads(a.threads)
    mmsa_run = importlib.import_module("MMSA.run")
    mmsa_mult = importlib.import_module("MMSA.trains.singleTask.MULT")  # the module (the package re-exports the class)

    captured: dict = {}
    install_shims(mmsa_run, mmsa_mult, torch, a.epochs, captured)
    # update_epochs=1: MMSA's MulT trainer otherwise steps the optimiser once per 8 batches and
    # never within an epoch of fewer batches; one step per batch as ours does.
    config = {"update_epochs": 1, **json.loads(a.config)}
    mmsa_run.MMSA_run("mult", "mosi", config=config, seeds=[a.seed], custom_feature=a.file, gpu_ids=[],
                      num_workers=0, verbose_level=0, model_save_dir=a.out, res_save_dir=a.out, log_dir=a.out)
    train = captured["train"]
    if len(train.seconds) < a.epochs:
        sys.exit(f"MMSA stopped early after {len(train.seconds)} of {a.epochs} epochs")
    print(json.dumps({
        "tool": "MMSA MulT", "epochs": a.epochs, "train_samples": train.samples,
        "train_seconds": sum(train.seconds), "samples_per_s": train.samples / sum(train.seconds),
        "samples_per_cpu_s": train.samples / sum(train.cpu_seconds),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_mae": float(captured["test"]["MAE"]), "parameters": captured["parameters"],
    }))


if __name__ == "__main__":
    main()
