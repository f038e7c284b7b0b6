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
