"""Why does (or doesn't) CIDer's counterfactual debiasing help on the synthetic `ood` split?

    python -m benchmarks.cider_ood --dataset "synthetic:mosi?scale=0.25&text_len=20" --seed 0

Trains CIDer (MACI + counterfactual, the model's study defaults) with the one loop (tau chosen on
validation), then on complete inputs of valid / test / ood prints:
  * the primary metric of the factual prediction (tau 0), at the calibrated tau, and of the
    counterfactual prediction alone (only the kept words);
  * the metric over the whole tau grid per split, and the tau that would be best on each split
    (an analysis of the OOD labels, never used for selection);
  * how strong the spurious word is in train (agreement with the label) and whether the
    counterfactual keeps the spurious ids.
This is a diagnosis script (minutes), not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic:mosi?scale=0.25&text_len=20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args(argv)

    from affectune.data.options import split_source
    from affectune.data.synthetic import config_from_options, generate_with_truth
    from affectune.loader import preload
    from affectune.metrics import PRIMARY_METRIC, compute_metrics
    from affectune.models import model_class
    from affectune.train import load_checkpoint, train_loop

    source = split_source(args.dataset)
    if source.scheme != "synthetic":
        p.error("the diagnosis needs the synthetic benchmark's latent truth (a synthetic: source)")
    dataset, truth = generate_with_truth(config_from_options(source.target, source.options))
    metric = PRIMARY_METRIC[dataset.task]
    config = {**model_class("cider").study_defaults, "model": "cider", "dataset": dataset.source,
              "seed": args.seed, "num_threads": 1}
    if args.epochs:
        config["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        outcome = train_loop({**config, "checkpoint_dir": tmp}, dataset=dataset)
        model, _ = load_checkpoint(outcome.checkpoint_path)
    k = model.spec.out_dim
    taus = model.config.tau_grid().tolist()
    print(f"{dataset.source}: seed {args.seed}, best epoch {outcome.best_epoch}, calibrated tau {float(model.tau):.2f}")

    spur = dataset.meta["spurious_ids"]
    keep = model.cf_keep.nonzero().flatten().tolist()
    spur_ids = [i for lo, hi in spur.values() for i in range(lo, hi)]
    lex_ids = [i for lo, hi in dataset.meta["lexicon_ids"].values() for i in range(lo, hi)]
    t = truth["train"]
    has = t["spurious_group"] >= 0
    agree = float(np.mean(t["spurious_group"][has] == t["label_group"][has]))
    print(f"train: {has.mean():.0%} of samples carry a spurious word, agreeing with the label group "
          f"{agree:.0%}; counterfactual keeps {len(keep)} ids: {sum(i in keep for i in spur_ids)}/{len(spur_ids)} "
          f"spurious, {sum(i in keep for i in lex_ids)}/{len(lex_ids)} lexicon")

    header = f"{'split':<6} {metric + ' tau=0':>12} {'calibrated':>11} {'cf only':>8} {'best tau (analysis)':>20}"
    print(header)
    grid_rows = {}
    for split in ("valid", "test", "ood"):
        data = preload(dataset, split)
        pair = predict_split_pair(model, data)
        y = data.label.numpy()

        def value(tau: float) -> float:
            s = pair[:, :k] - tau * pair[:, k:]
            return compute_metrics(dataset.task, y, s[:, 0] if k == 1 else s,
                                   num_classes=dataset.num_classes or None)[metric]

        curve = [value(tau) for tau in taus]
        grid_rows[split] = curve
        cf_only = compute_metrics(dataset.task, y, pair[:, k] if k == 1 else pair[:, k:],
                                  num_classes=dataset.num_classes or None)[metric]
        best = int(np.argmin(curve) if metric == "mae" else np.argmax(curve))
        print(f"{split:<6} {curve[0]:>12.4f} {value(float(model.tau)):>11.4f} {cf_only:>8.4f} "
              f"{taus[best]:>8.2f} ({curve[best]:.4f})")
    print("tau grid: " + " ".join(f"{tau:.1f}" for tau in taus[::5]))
    for split, curve in grid_rows.items():
        print(f"{split:<6}   " + " ".join(f"{v:.3f}" for v in curve[::5]))
    return 0


def predict_split_pair(model, data):
    """(N, 2k) factual | counterfactual scores on complete inputs."""
    import torch

    with torch.inference_mode():
        parts = [model.factual_and_counterfactual(b) for b in data.batches(256)]
    return torch.cat(parts).float().numpy()


if __name__ == "__main__":
    sys.exit(main())
