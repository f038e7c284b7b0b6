"""`python -m affectune data describe` as a user runs it: a subprocess with the venv python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from affectune.__main__ import build_parser, main
from affectune.data import load

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "affectune", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_describe_prints_summary_and_fingerprint():
    source = "synthetic:iemocap?seed=2&scale=0.05"
    out = run_cli("data", "describe", source)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    ds = load(source)
    assert lines[0] == f"source: {ds.source}" and "task: classification" in lines
    assert lines[-1] == f"fingerprint: {ds.fingerprint}"
    assert f"split train: N={len(ds.splits['train'])}" in lines
    assert "  audio  [T=50, D=16]  mean length" in out.stdout
    label_line = next(x for x in lines if x.startswith("  labels:"))
    assert all(f"{c}=" in label_line for c in ds.class_names)


def test_describe_bad_input_exits_2_without_traceback():
    out = run_cli("data", "describe", "synthetic:mosi?sede=1")
    assert out.returncode == 2 and out.stdout == ""
    assert "unknown option(s) ['sede']" in out.stderr and "seed=0 (int)" in out.stderr
    assert "Traceback" not in out.stderr


def test_main_in_process_regression_summary(capsys, tmp_path):
    assert main(["data", "describe", "synthetic:mosi?scale=0.05&aligned=0"]) == 0
    text = capsys.readouterr().out
    assert "aligned: False" in text and "  audio  [T=125, D=16]" in text
    assert "labels: mean" in text and "histogram (rounded -3..3)" in text
    assert main(["data", "describe", f"mmsa:{tmp_path / 'absent.pkl'}"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_parser_has_extensible_command_groups():
    parser = build_parser()
    args = parser.parse_args(["data", "describe", "synthetic:mosi"])
    assert args.command == "data" and args.source == "synthetic:mosi" and callable(args.func)
