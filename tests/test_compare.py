"""The comparison of methods: its store tables, its statistics (scipy parity, a hand-computed
bootstrap) and its table exports."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from affectune.store import StoreError, open_store


def _curves(value: float) -> pd.DataFrame:
    return pd.DataFrame({"split": "test", "condition": "intra", "subset": "tav", "rate": [0.0, 0.5],
                         "seed": 0, "pattern": "random", "fill": "zero", "metric": "mae",
                         "value": [value, value + 0.1]})


def test_store_round_trip_of_a_comparison(tmp_path):
    store = open_store(str(tmp_path))
    store.write_comparison({"comparison": "cmp", "dataset": "synthetic:mosi", "fingerprint": "f" * 8,
                            "task": "regression", "primary_metric": "mae", "methods": ["a", "b"],
                            "train_seeds": [0, 1], "mask_seeds": [0], "splits": ["test"],
                            "sources": {"a": {"source": "study", "study": "a-search", "trial_id": "t1"},
                                        "b": {"source": "defaults"}},
                            "protocol": {"headline": ["auilc", "tav", "mae"]}})
    for method, seed in (("a", 0), ("a", 1), ("b", 0)):
        store.write_comparison_run("cmp", {"method": method, "train_seed": seed, "config": {"lr": 0.1},
                                           "source": "study" if method == "a" else "defaults",
                                           "source_study": "a-search" if method == "a" else None,
                                           "dataset": "synthetic:mosi", "fingerprint": "f" * 8,
                                           "num_parameters": 10, "val_mae": 0.5}, _curves(seed))
    store.write_comparison_run("cmp", {"method": "a", "train_seed": 1, "config": {"lr": 0.2}, "source": "study",
                                       "dataset": "synthetic:mosi", "fingerprint": "f" * 8}, _curves(9.0))
    row = store.comparisons("cmp").iloc[0]
    assert json.loads(row["sources"])["a"]["study"] == "a-search"
    assert json.loads(row["methods"]) == ["a", "b"]
    runs = store.comparison_runs("cmp").sort_values(["method", "train_seed"])
    assert list(zip(runs["method"], runs["train_seed"])) == [("a", 0), ("a", 1), ("b", 0)]  # rewrite replaced
    assert json.loads(runs["config"].iloc[1]) == {"lr": 0.2}
    curves = store.comparison_curves("cmp")
    assert len(curves) == 6 and sorted(curves[curves["method"] == "a"]["value"].round(3)) == [0.0, 0.1, 9.0, 9.1]
    assert store.comparisons().shape[0] == 1 and store.studies().empty  # separate tables
    with pytest.raises(StoreError, match="fields"):
        store.write_comparison_run("cmp", {"method": "a", "train_seed": 2}, _curves(0.0))
    store.delete_comparison("cmp")
    assert store.comparisons().empty and store.comparison_curves().empty


# ----------------------------------------------------------------------------- statistics
def test_paired_t_matches_scipy_on_a_hand_made_case():
    from scipy import stats

    from affectune.significance import paired_t

    a = [0.80, 0.82, 0.79, 0.85, 0.81]
    b = [0.78, 0.80, 0.80, 0.81, 0.79]  # d = .02 .02 -.01 .04 .02: mean .018, sd .0178885
    t, p, dz = paired_t(a, b)
    ref = stats.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-12)
    assert t == pytest.approx(2.25, rel=1e-9) and dz == pytest.approx(0.018 / math.sqrt(3.2e-4), rel=1e-9)
    assert paired_t([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0, 0.0)
    assert paired_t([1.0, 2.0], [0.5, 1.5])[1] == 0.0  # a certain difference


def test_paired_bootstrap_with_a_fixed_seed_is_the_hand_computed_value():
    from affectune.significance import paired_bootstrap, resample_weights, weighted_metric

    weights = resample_weights(4, 3, seed=7)  # draws [3 2 2 3], [2 3 3 0], [0 1 1 3]
    assert weights.tolist() == [[0, 0, 2, 2], [1, 0, 1, 2], [1, 2, 0, 1]]
    y = np.zeros(4)
    mae_a = weighted_metric("mae", y, np.array([0.0, 1.0, 0.5, 0.2]), weights)
    mae_b = weighted_metric("mae", y, np.array([[0.4], [0.0], [-0.5], [0.6]]), weights)
    assert mae_a == pytest.approx([0.35, 0.225, 0.55]) and mae_b == pytest.approx([0.55, 0.525, 0.25])
    p, low, high = paired_bootstrap(mae_a, mae_b)  # differences -0.2, -0.3, +0.3
    assert p == pytest.approx(2 / 3) and low == pytest.approx(-0.295) and high == pytest.approx(0.275)


@pytest.mark.parametrize("task,metric", [("regression", "mae"), ("classification", "wf1"),
                                         ("classification", "war")])
def test_weighted_metric_equals_the_metric_on_the_resampled_arrays(task, metric):
    from affectune.metrics import compute_metrics
    from affectune.significance import weighted_metric

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 40) if task == "classification" else rng.normal(size=40)
    pred = rng.normal(size=(40, 4)) if task == "classification" else rng.normal(size=(40, 1))
    index = rng.integers(0, 40, size=(5, 40))
    weights = np.stack([np.bincount(row, minlength=40) for row in index]).astype(float)
    got = weighted_metric(metric, y, pred, weights)
    want = [compute_metrics(task, y[row], pred[row], num_classes=4 if task == "classification" else None)[metric]
            for row in index]
    assert got == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------- tables
def _grid(method: str, seed: int, mae_at: dict[float, float], inter_mae: float) -> pd.DataFrame:
    """Curves of one run: the {t,a,v} MAE curve at the given rates, and one inter condition."""
    rows = [("test", "intra", "tav", r, 0, "random", "zero", "mae", v) for r, v in mae_at.items()]
    rows.append(("test", "inter", "t", math.nan, 0, "random", "zero", "mae", inter_mae))
    frame = pd.DataFrame(rows, columns=["split", "condition", "subset", "rate", "seed", "pattern", "fill",
                                        "metric", "value"])
    return frame.assign(method=method, train_seed=seed)


def _comparison():
    """Two methods x two seeds; a is better (lower MAE) on every seed; hand-computable cells."""
    from affectune.compare import build_significance, build_tables, per_run_values

    curves = pd.concat([_grid("a", 0, {0.0: 0.2, 0.5: 0.4}, 0.5), _grid("a", 1, {0.0: 0.4, 0.5: 0.6}, 0.7),
                        _grid("b", 0, {0.0: 1.2, 0.5: 1.4}, 0.6), _grid("b", 1, {0.0: 1.4, 0.5: 1.6}, 0.6)])
    values = per_run_values(curves, "regression")
    y = np.zeros(3)  # a predicts perfectly, b is off by 1 on every sample: every resample differs by 1
    headline = {(m, s): {"test": (y, {0.0: y[:, None] + (m == "b"), 0.5: y[:, None] + (m == "b")})}
                for m in ("a", "b") for s in (0, 1)}
    return build_tables(values), build_significance(values, headline, "regression", 100, 0)


def test_tables_mean_std_best_and_significance_against_the_best():
    tables, significance = _comparison()
    auilc = tables[tables["table"] == "auilc"].set_index("method")
    # AUILC of a two-point curve = the mean of its ends: a 0.3 and 0.5 (mean 0.4), b 1.3 and 1.5 (1.4).
    assert auilc.loc["a", "mean"] == pytest.approx(0.4) and auilc.loc["a", "std"] == pytest.approx(math.sqrt(0.02))
    assert auilc.loc["b", "mean"] == pytest.approx(1.4) and auilc["best"].to_dict() == {"a": True, "b": False}
    inter = tables[tables["table"] == "inter"].set_index("method")
    assert inter.loc["a", "mean"] == pytest.approx(0.6) and inter["best"].to_dict() == {"a": True, "b": True}
    sig = significance.set_index("method")
    assert (sig["reference"] == "a").all() and math.isnan(sig.loc["a", "seed_p"])
    assert sig.loc["b", "diff"] == pytest.approx(1.0) and sig.loc["b", "seed_p"] < 1e-9  # equal differences
    assert sig.loc["b", "bootstrap_p"] == 0.0
    assert (sig.loc["b", "bootstrap_ci_low"], sig.loc["b", "bootstrap_ci_high"]) == pytest.approx((1.0, 1.0))


def test_exports_mark_the_best_and_write_booktabs(tmp_path):
    from affectune.compare import export, render, wide_table

    tables, significance = _comparison()
    md = render(tables, significance, "auilc", "test")
    assert "| a | **0.400 ± 0.141** | best |" in md and "| b | 1.400 ± 0.141 | +1.000 |" in md
    tex = render(tables, significance, "auilc", "test", style="latex")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{0.400 $\\pm$ 0.141}" in tex
    assert "\\multicolumn{1}{c}{$\\{t,a,v\\}$}" in tex
    wide = wide_table(tables, significance, "inter", "test")
    assert wide.set_index("method").loc["b", "t mae mean"] == pytest.approx(0.6)
    paths = export(tables, significance, str(tmp_path), "cmp")
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == sorted(
        ["cmp.md", "cmp-auilc-test.csv", "cmp-auilc-test.tex", "cmp-inter-test.csv", "cmp-inter-test.tex"])
    assert pd.read_csv(tmp_path / "cmp-auilc-test.csv").set_index("method").loc["b", "bootstrap_p"] == 0.0


def test_configs_come_from_a_study_a_preset_or_the_defaults_with_lineage(tmp_path):
    from affectune.compare import resolve_configs
    from affectune.models import model_class

    store = open_store(str(tmp_path))
    store.write_study({"study": "dqf-search", "method": "dqf", "dataset": "synthetic:mosi", "fingerprint": "f",
                       "objective": [{"metric": "objective", "mode": "min"}]})
    lineage = {"method": "dqf", "dataset": "synthetic:mosi", "fingerprint": "f", "code_version": "c"}
    for trial, objective, lr in (("t1", 0.9, 0.1), ("t2", 0.5, 0.2)):
        store.write_trial("dqf-search", {"trial_id": trial, "status": "completed", "seed": 0, **lineage,
                                         "config": {"lr": lr, "seed": 0, "model": "dqf", "dataset": "x"},
                                         "best_objective": objective, "objective": objective})
    said = []
    configs, sources = resolve_configs(["dqf", "umdf", "late_fusion"], "synthetic:iemocap", store=store,
                                       from_studies=["dqf-search"], log=said.append)
    assert configs["dqf"] == {"lr": 0.2} and sources["dqf"]["trial_id"] == "t2"  # the lower objective
    assert configs["umdf"] == model_class("umdf").preset("paper", "synthetic:iemocap")
    assert sources["umdf"] == {"source": "preset", "preset": "paper"}
    assert configs["late_fusion"] == model_class("late_fusion").study_defaults
    assert sources["late_fusion"] == {"source": "defaults"} and any("late_fusion: no usable" in s for s in said)
    with pytest.raises(ValueError, match="not among"):
        resolve_configs(["umdf"], "synthetic:mosi", store=store, from_studies=["dqf-search"], log=said.append)
