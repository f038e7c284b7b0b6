"""`python -m affectune train ...` and `python -m affectune demo`.

`train` trains one config (validation selects the checkpoint), then evaluates the selected
checkpoint on the test grid and prints the robustness summary with its AUILC table. With
`--out DIR` it also writes best.pt, history.json, outcome.json, curves.csv and summary.csv there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

DEMO_SOURCE = "synthetic:mosi?scale=0.25"
"""The demo's data: a quarter-size MOSI-shaped set; the model's `demo` preset sets the budget."""


class DeprecatedAlias(argparse.Action):
    """A renamed flag's old spelling: still works, warns on stderr with the new name."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def parse_value(text: str):
    """JSON when it parses (numbers, true/false/null, lists, quoted strings), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_csv(text: str, cast=str) -> tuple:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    try:
        return tuple(cast(t) for t in items)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: {e}") from None


def apply_overrides(config: dict, assignments: list[str]) -> dict:
    """`key=value` pairs (values parsed as JSON when they parse), routed by
    `affectune.search_spaces.route_overrides` (see there for the precedence). Unknown keys raise
    ValueError with the valid ones listed."""
    from affectune.search_spaces import route_overrides

    overrides = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        overrides[key] = parse_value(raw)
    try:
        return route_overrides(config["model"], config, overrides)
    except KeyError as e:
        raise ValueError(f"--set {e.args[0]}") from None


def base_train_config(model: str, preset: str | None, dataset: str | None = None) -> dict:
    """The config a command starts from: the method's named preset (e.g. "paper"), or nothing."""
    from affectune.models import model_class
    from affectune.search_spaces import route_overrides

    if preset is None:
        return {"model": model}
    return route_overrides(model, {"model": model}, model_class(model).preset(preset, dataset))


def _progress(metrics: dict, checkpoint_dir) -> None:
    key = "objective"
    print(f"epoch {metrics['epoch']:>3}  train_loss {metrics['train_loss']:.4f}  "
          f"{key} {metrics[key]:.4f}  best {metrics['best_objective']:.4f} (epoch {metrics['best_epoch']})"
          f"  {metrics['epoch_time_s']:.1f}s" + ("  *saved" if checkpoint_dir else ""), flush=True)


def run_train(config: dict, *, mask_seeds=(0, 1, 2), patterns=("random",), fills=("zero",), subsets=None,
              out: str | None = None, include_inter: bool = True, verbose: bool = True):
    """Train `config`, evaluate the selected checkpoint on the test grid; returns (outcome, result)."""
    from affectune.data import load
    from affectune.evaluate import format_auilc_table, robustness
    from affectune.missing import SUBSETS, parse_subset
    from affectune.train import load_checkpoint, train_loop

    if out:
        config = {**config, "checkpoint_dir": str(Path(out))}
    dataset = load(config["dataset"])
    outcome = train_loop(config, _progress if verbose else None, dataset=dataset)
    model, _ = load_checkpoint(outcome.checkpoint_path)
    grid_subsets = SUBSETS if subsets is None else tuple(parse_subset(s) for s in subsets)
    result = robustness(model, dataset, "test", seeds=mask_seeds, patterns=patterns, fills=fills,
                        subsets=grid_subsets, include_inter=include_inter)
    print(f"\nselected epoch {outcome.best_epoch} of {outcome.epochs_run} by {outcome.select_metric} = "
          f"{outcome.best_objective:.4f}; {outcome.num_parameters} parameters; "
          f"checkpoint {outcome.checkpoint_path}")
    print("test, complete inputs: " + "  ".join(f"{k} {v:.4f}" for k, v in result.complete.items()))
    print()
    print(format_auilc_table(result.summary))
    if out:
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        result.curves.to_csv(root / "curves.csv", index=False)
        result.summary.to_csv(root / "summary.csv", index=False)
        (root / "history.json").write_text(json.dumps(outcome.history, indent=1))
        summary = {k: v for k, v in dataclasses.asdict(outcome).items() if k != "history"}
        summary["test_complete"] = result.complete
        (root / "outcome.json").write_text(json.dumps(summary, indent=1, default=str))
        print(f"\nwrote {root}/curves.csv, summary.csv, history.json, outcome.json")
    return outcome, result


def train_config_from_args(args) -> dict:
    """Config = the preset (if any), then the flags given, then `--set` pairs (later wins)."""
    config = {**base_train_config(args.model, args.preset, args.dataset), "dataset": args.dataset}
    for key in ("epochs", "batch_size", "lr", "seed", "device"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return apply_overrides(config, args.set or [])


def _train_command(args) -> int:
    try:
        config = train_config_from_args(args)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    run_train(config, mask_seeds=args.mask_seeds, patterns=args.patterns, fills=args.fills,
              subsets=args.subsets, out=args.out, include_inter=not args.no_inter)
    return 0


def _demo_command(args) -> int:
    from affectune.models import DEMO_MODEL

    model = args.model or DEMO_MODEL
    try:
        config = base_train_config(model, "demo", DEMO_SOURCE)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    print(f"demo: training {model} on {DEMO_SOURCE} ({config.get('epochs')} epochs), then the robustness grid\n")
    run_train({**config, "dataset": DEMO_SOURCE, "num_threads": args.threads}, mask_seeds=(0,), out=args.out)
    return 0


def add_train_commands(subparsers) -> None:
    """`train` (one config, then the test grid) and `demo`."""
    p = subparsers.add_parser("train", help="train one config, evaluate it on the robustness grid",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registered model name (`python -m affectune models list`)")
    p.add_argument("--dataset", required=True, help="source string, e.g. synthetic:mosi?scale=0.25")
    p.add_argument("--preset", default=None,
                   help="the model's named train config to start from, e.g. paper (flags and --set override it)")
    p.add_argument("--epochs", type=int, help="max epochs (default: the preset's, else TrainConfig's)")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a TrainConfig field or a model config field (value parsed as JSON if possible); "
                        "repeatable")
    p.add_argument("--mask-seeds", type=lambda s: parse_csv(s, int), default=(0, 1, 2),
                   help="mask seeds of the test grid (default 0,1,2)")
    p.add_argument("--eval-seeds", type=lambda s: parse_csv(s, int), dest="mask_seeds",
                   action=DeprecatedAlias, new="--mask-seeds", help=argparse.SUPPRESS)
    p.add_argument("--patterns", type=parse_csv, default=("random",), help="random,block")
    p.add_argument("--fills", type=parse_csv, default=("zero",), help="zero,gaussian")
    p.add_argument("--subsets", type=parse_csv, default=None,
                   help="subset labels of the grid, e.g. tav,t (default: all 7)")
    p.add_argument("--no-inter", action="store_true", help="skip the inter-modality conditions")
    p.add_argument("--out", help="directory for the checkpoint and the result tables")
    p.set_defaults(func=_train_command)

    d = subparsers.add_parser("demo", help="train a model's `demo` preset briefly on the synthetic MOSI preset "
                                           "and print AUILC")
    d.add_argument("--model", default=None,
                   help="a registered model with a `demo` preset (default: affectune.models.DEMO_MODEL)")
    d.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: oversubscribed threads on a busy machine are far slower)")
    d.add_argument("--out", help="directory for the checkpoint and the result tables")
    d.set_defaults(func=_demo_command)
