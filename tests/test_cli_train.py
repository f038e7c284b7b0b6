"""`python -m affectune train`: prints the AUILC table; DQF beats late fusion under missing frames."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pandas as pd
import pytest

import acceptance_runs
import background
from affectune.models import list_models, model_class
from affectune.train_cli import apply_overrides, parse_value

ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "affectune", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def test_train_command_prints_the_auilc_table_and_writes_results(tmp_path):
    out = tmp_path / "run"
    proc = cli("train", "--model", "dqf", "--dataset", "synthetic:mosi?scale=0.05", "--epochs", "1",
               "--batch-size", "16", "--set", "hidden=16", "--set", "layers=1", "--set", "num_threads=1",
               "--mask-seeds", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "AUILC on test (pattern=random, fill=zero, seeds=1)" in text
    for label in ("{v}", "{a}", "{t}", "{a,v}", "{t,v}", "{t,a}", "{t,a,v}"):
        assert f"\n{label} " in text
    assert "selected epoch 1 of 1 by valmask_mae" in text
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 7 * 8 and (out / "best.pt").is_file()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["condition"]) == {"intra", "inter"}


def test_bad_set_key_is_a_clear_error():
    proc = cli("train", "--model", "late_fusion", "--dataset", "synthetic:mosi?scale=0.05", "--epochs", "1",
               "--set", "nonsense=3")
    assert proc.returncode == 2
    assert "--set nonsense" in proc.stderr and "hidden" in proc.stderr


def test_demo_trains_the_default_models_demo_preset_and_refuses_a_model_without_one():
    from affectune.models import DEMO_MODEL
    from affectune.train import TrainConfig
    from affectune.train_cli import DEMO_SOURCE, base_train_config

    config = TrainConfig.from_dict({**base_train_config(DEMO_MODEL, "demo", DEMO_SOURCE), "dataset": DEMO_SOURCE})
    assert config.model == DEMO_MODEL and config.epochs <= 10  # a demo budget, not a paper's
    without = next(name for name in list_models() if "demo" not in model_class(name).presets)
    proc = cli("demo", "--model", without)
    assert proc.returncode == 2 and f"model {without!r} has no preset 'demo'" in proc.stderr


def test_overrides_route_to_train_or_model_config():
    cfg = apply_overrides({"model": "dqf", "dataset": "synthetic:mosi", "epochs": 1},
                          ["lr=0.01", "hidden=32", "model_config.heads=2", "sinusoidal_pe=false", "optimizer=sgd"])
    assert cfg["lr"] == 0.01 and cfg["optimizer"] == "sgd"
    assert cfg["model_config"] == {"hidden": 32, "heads": 2, "sinusoidal_pe": False}
    assert parse_value("[1, 2]") == [1, 2] and parse_value("adam") == "adam" and parse_value("null") is None


def test_one_routing_rule_for_set_presets_and_search_spaces():
    from affectune.search_spaces import apply_params, route_overrides
    from affectune.train import TrainConfig

    base = {"model": "dqf", "lr": 1e-3, "model_config": {"hidden": 24}}
    drawn = {"lr": 0.01, "layers": 2, "model_config.heads": 2}
    via_set = apply_overrides(base, [f"{k}={v}" for k, v in drawn.items()])
    assert via_set == apply_params("dqf", drawn, base) == route_overrides("dqf", base, drawn)
    assert via_set["model_config"] == {"hidden": 24, "layers": 2, "heads": 2} and via_set["lr"] == 0.01
    assert base["model_config"] == {"hidden": 24}  # the base is not modified
    with pytest.raises(KeyError, match="neither a train config field"):
        apply_params("dqf", {"nonsense": 1}, base)
    # no registered model config shadows a train config field, so the two routes never compete
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in list_models():
        assert not train_fields & {f.name for f in dataclasses.fields(model_class(name).config_class)}, name


def _train_args(*argv):
    from affectune.__main__ import build_parser

    return build_parser().parse_args(["train", "--model", "dqf", "--dataset", "synthetic:mosi", *argv])


def test_train_preset_then_flags_then_set(capsys):
    from affectune.train_cli import train_config_from_args

    paper = model_class("dqf").preset("paper")
    config = train_config_from_args(_train_args("--preset", "paper"))
    assert config["lr"] == paper["lr"] and config["optimizer"] == paper["optimizer"]
    assert config["epochs"] == paper["epochs"] and config["model_config"] == paper["model_config"]
    config = train_config_from_args(_train_args("--preset", "paper", "--epochs", "1", "--set", "lr=0.5",
                                                "--set", "layers=1"))
    assert config["epochs"] == 1 and config["lr"] == 0.5 and config["model_config"]["layers"] == 1
    assert config["batch_size"] == paper["batch_size"]
    assert "epochs" not in train_config_from_args(_train_args())  # no preset: TrainConfig's default
    with pytest.raises(KeyError, match="no preset 'nope'"):
        train_config_from_args(_train_args("--preset", "nope"))
    # --eval-seeds is the old spelling of --mask-seeds: still accepted, with a warning
    assert _train_args("--eval-seeds", "4,5").mask_seeds == (4, 5)
    assert "--eval-seeds is deprecated; use --mask-seeds" in capsys.readouterr().err
    assert _train_args("--mask-seeds", "7").mask_seeds == (7,)


def test_dqf_beats_late_fusion_on_tav_auilc_and_its_curve_does_not_rise(request):
    """The issue's acceptance check with a small budget (the README records a longer run). The two
    trainings run in the background from the start of the session (tests/acceptance_runs.py)."""
    code, work = background.job(request, "dqf-vs-late-fusion", background.script("acceptance_runs"),
                                timeout_s=acceptance_runs.TIME_LIMIT_S + 60)
    logs = {m: (work / f"{m}.log").read_text(errors="replace")[-3000:] for m in acceptance_runs.MODELS}
    assert code == 0, logs
    results = {m: (pd.read_csv(work / m / "summary.csv"), pd.read_csv(work / m / "curves.csv"))
               for m in acceptance_runs.MODELS}
    auilc = {m: s[(s.subset == "tav") & (s.metric == "mae")]["auilc"].item() for m, (s, _) in results.items()}
    assert auilc["dqf"] < auilc["late_fusion"]  # MAE: lower is better
    curves = results["dqf"][1]
    mae = curves[curves.metric == "mae"].groupby("rate")["value"].mean()
    # DQF trains on masked inputs only and selection rewards the masked validation set, so at this
    # 8-epoch budget its {t,a,v} curve can be flat; it must not be better with 90% of the frames
    # missing than with none (beyond noise). Measured on seed 0: MAE 0.756 at rate 0, 1.009 at 0.9
    # (AUILC 0.793 against late fusion's 0.843).
    assert mae[0.9] > mae[0.0] - 0.01
