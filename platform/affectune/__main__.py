"""Command line: `python -m affectune <command> ...` (also installed as `affectune`).

Each command group is added by one small function taking the subparsers object; it sets
`func` (called with the parsed args, returns an exit code). Add a new group by writing such a
function and listing it in `COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from affectune import MODALITIES


# --- data ----------------------------------------------------------------------------------
def describe_dataset(ds) -> str:
    """Human-readable summary of a `Dataset`, ending with its fingerprint line."""
    lines = [f"source: {ds.source}", f"task: {ds.task}"]
    if ds.task == "classification":
        lines.append(f"classes ({ds.num_classes}): {', '.join(ds.class_names)}")
    lines.append(f"aligned: {ds.aligned}")
    lines.append(f"vocab size: {ds.vocab_size}" if ds.vocab_size else "vocab size: 0 (no token ids)")
    for name, s in ds.splits.items():
        lines.append(f"split {name}: N={len(s)}")
        for m in MODALITIES:
            t, d = s.features(m).shape[1:]
            lines.append(f"  {m:<6} [T={t}, D={d}]  mean length {s.lengths[m].mean():.1f}")
        if ds.task == "classification":
            counts = np.bincount(s.label_cls, minlength=ds.num_classes)
            names = ds.class_names or tuple(str(k) for k in range(ds.num_classes))
            dist = ", ".join(f"{c}={k} ({k / len(s):.1%})" for c, k in zip(names, counts))
            lines.append(f"  labels: {dist}")
        else:
            y = s.label_reg
            hist, _ = np.histogram(y, bins=np.arange(-3.5, 4.0, 1.0))  # rounded score -3..3
            lines.append(f"  labels: mean {y.mean():.3f} std {y.std():.3f} "
                         f"zero {np.mean(y == 0):.1%} non-negative {np.mean(y >= 0):.1%}")
            lines.append("  histogram (rounded -3..3): " + " ".join(str(int(h)) for h in hist))
    lines.append(f"fingerprint: {ds.fingerprint}")
    return "\n".join(lines)


def _data_describe(args) -> int:
    from affectune.data import load

    print(describe_dataset(load(args.source)))
    return 0


def add_data_commands(subparsers) -> None:
    """`data describe SOURCE`."""
    data = subparsers.add_parser("data", help="inspect datasets")
    sub = data.add_subparsers(dest="data_command", required=True)
    describe = sub.add_parser("describe", help="summarise a dataset and print its fingerprint")
    describe.add_argument("source", help="e.g. synthetic:mosi?seed=1, mmsa:/path/aligned_50.pkl, "
                                         "merbench:/path/dir")
    describe.set_defaults(func=_data_describe)


# --- models --------------------------------------------------------------------------------
MMSA_MOSI_DIMS = {"dims": {"text": 768, "audio": 5, "vision": 20}, "seq_lens": {"text": 50, "audio": 375, "vision": 500},
                  "vocab_size": 30522}
"""MOSI-shaped MMSA dimensions (BERT text 768, COVAREP audio 5, Facet vision 20, unaligned_50.pkl)."""


def describe_model(name: str, spec, overrides: dict | None = None) -> str:
    """A model's config (every field) and its parameter count for data shaped like `spec`."""
    import dataclasses

    from affectune.models import build_model

    model = build_model(name, dict(overrides or {}), spec)
    lines = [f"model: {name}", f"data: task {spec.task}"
             + (f" ({spec.num_classes} classes)" if spec.task == "classification" else "")
             + f", aligned {spec.aligned}, dims " + ", ".join(f"{m} {spec.dims[m]}" for m in MODALITIES)
             + ", frames " + ", ".join(f"{m} {spec.seq_lens[m]}" for m in MODALITIES)
             + f", vocab {spec.vocab_size}", "config:"]
    for f in dataclasses.fields(model.config):
        lines.append(f"  {f.name} = {getattr(model.config, f.name)!r}")
    buffers = sum(b.numel() for b in model.buffers())
    lines.append(f"parameters: {model.num_parameters():,} trainable ({buffers:,} buffer elements, not counted)")
    return "\n".join(lines)


def _models_list(args) -> int:
    from affectune.models import list_models

    print("\n".join(list_models()))
    return 0


def _models_describe(args) -> int:
    from affectune.data.schema import DatasetSpec
    from affectune.train_cli import apply_overrides

    if args.dataset:
        from affectune.data import load

        spec = load(args.dataset).spec()
    else:
        task = "classification" if args.classes else "regression"
        seq_lens = dict(MMSA_MOSI_DIMS["seq_lens"])
        if args.aligned:
            seq_lens = {m: seq_lens["text"] for m in MODALITIES}
        spec = DatasetSpec(task, args.classes, dict(MMSA_MOSI_DIMS["dims"]), seq_lens,
                           vocab_size=MMSA_MOSI_DIMS["vocab_size"], aligned=args.aligned)
    try:
        overrides = apply_overrides({"model": args.name}, args.set or [])["model_config"]
        print(describe_model(args.name, spec, overrides))
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    return 0


def add_model_commands(subparsers) -> None:
    """`models list`, `models describe NAME [--dataset SOURCE | --mmsa-dims]`."""
    models = subparsers.add_parser("models", help="inspect registered models")
    sub = models.add_subparsers(dest="models_command", required=True)
    listing = sub.add_parser("list", help="registered model names")
    listing.set_defaults(func=_models_list)
    describe = sub.add_parser("describe", help="print a model's config and parameter count")
    describe.add_argument("name", help="registered model name")
    where = describe.add_mutually_exclusive_group()
    where.add_argument("--dataset", help="build for this dataset's shapes, e.g. synthetic:mosi?scale=0.1")
    where.add_argument("--mmsa-dims", action="store_true",
                       help="MOSI-shaped MMSA dimensions: text 768, audio 5, vision 20; 50/375/500 frames "
                            "(the default when no --dataset is given)")
    describe.add_argument("--aligned", action="store_true", help="with MMSA dims: aligned_50 (50 frames each)")
    describe.add_argument("--classes", type=int, default=0, help="with MMSA dims: classification with N classes")
    describe.add_argument("--set", action="append", metavar="KEY=VALUE", help="a model config field; repeatable")
    describe.set_defaults(func=_models_describe)


def add_train_commands(subparsers) -> None:
    """`train` and `demo` (implemented in affectune.train_cli)."""
    from affectune.train_cli import add_train_commands as add

    add(subparsers)


def add_doctor_command(subparsers) -> None:
    """`doctor` (implemented in affectune.doctor)."""
    from affectune.doctor import add_doctor_command as add

    add(subparsers)


COMMAND_GROUPS = [add_data_commands, add_model_commands, add_train_commands, add_doctor_command]
"""Functions that each add one command group to the top-level subparsers."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="affectune", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMAND_GROUPS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run the command; a `DatasetError` prints to stderr and exits 2."""
    from affectune.data.schema import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
