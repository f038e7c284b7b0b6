"""Metrics: hand-computed values, parity with scikit-learn / scipy, AUILC against np.trapezoid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_absolute_error,
    recall_score,
)

from affectune import metrics as M

FAST = settings(max_examples=40, deadline=None)

# ----------------------------------------------------------------------------- regression

Y_TRUE = np.array([-2.0, -0.5, 0.0, 0.0, 1.4, 2.6, -3.2])
Y_PRED = np.array([-1.6, 0.3, 0.2, -0.1, 0.6, 3.5, -2.5])


def test_regression_hand_computed():
    r = M.regression_metrics(Y_TRUE, Y_PRED)
    # has0 (>= 0 positive): truth FFTTTTF, pred FTTFTTF -> 5/7 correct.
    # F1(True)=2*3/(2*3+1+1)=0.75 (support 4), F1(False)=2*2/(2*2+1+1)=2/3 (support 3) -> 5/7.
    assert r["has0_acc2"] == pytest.approx(5 / 7)
    assert r["has0_f1"] == pytest.approx((4 * 0.75 + 3 * (2 / 3)) / 7)
    # non0 drops the two zero labels: truth FFTTF, pred FTTTF -> 4/5; F1 0.8 for both classes.
    assert r["non0_acc2"] == pytest.approx(0.8)
    assert r["non0_f1"] == pytest.approx(0.8)
    # acc7: truth clip/round -> -2,-0,0,0,1,3,-3 ; pred -> -2,0,0,-0,1,3,-2 (np.round(-2.5) = -2).
    assert r["acc7"] == pytest.approx(6 / 7)
    # acc5: both clip to [-2, 2] -> -2,0,0,0,1,2,-2 on both sides.
    assert r["acc5"] == pytest.approx(1.0)
    assert r["mae"] == pytest.approx((0.4 + 0.8 + 0.2 + 0.1 + 0.8 + 0.9 + 0.7) / 7)
    assert r["corr"] == pytest.approx(stats.pearsonr(Y_TRUE, Y_PRED).statistic)
    assert set(r) == {k for k, v in M.METRICS.items() if v.task == "regression"}
    assert all(type(v) is float for v in r.values())


def test_multiclass_accuracy_rounds_half_to_even_like_mmsa():
    # np.round: 0.5 -> 0, 1.5 -> 2, -0.5 -> -0, 2.5 -> 2 (half-up rounding would score 2/4).
    r = M.regression_metrics([0.5, 1.5, -0.5, 2.5], [0.0, 2.0, 0.0, 2.0])
    assert r["acc7"] == 1.0
    assert r["acc5"] == 1.0  # 2.5 clips to 2 first


def test_regression_accepts_torch_and_column_vectors():
    r = M.regression_metrics(torch.tensor(Y_TRUE)[:, None], torch.tensor(Y_PRED, dtype=torch.float32))
    assert r["mae"] == pytest.approx(M.regression_metrics(Y_TRUE, Y_PRED)["mae"], rel=1e-6)


def test_regression_degenerate_cases_are_defined():
    r = M.regression_metrics([0.0, 0.0, 0.0], [0.5, -0.5, 0.1])
    assert math.isnan(r["non0_acc2"]) and math.isnan(r["non0_f1"])  # no non-zero label to score
    assert r["has0_acc2"] == pytest.approx(2 / 3)
    r = M.regression_metrics([1.0, -2.0, 0.5], [0.3, 0.3, 0.3])
    assert r["corr"] == 0.0  # constant predictions
    with pytest.raises(ValueError, match="differ in length"):
        M.regression_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        M.regression_metrics([], [])
    with pytest.raises(ValueError, match="finite"):
        M.regression_metrics([1.0, 2.0], [1.0, float("nan")])


def mmsa_reference(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MMSA's definitions written out with scikit-learn, as the parity reference."""
    nz = y_true != 0
    mult = lambda lo: np.mean(np.round(np.clip(y_pred, -lo, lo)) == np.round(np.clip(y_true, -lo, lo)))  # noqa: E731
    return {
        "has0_acc2": accuracy_score(y_true >= 0, y_pred >= 0),
        "has0_f1": f1_score(y_true >= 0, y_pred >= 0, average="weighted"),
        "non0_acc2": accuracy_score(y_true[nz] > 0, y_pred[nz] > 0),
        "non0_f1": f1_score(y_true[nz] > 0, y_pred[nz] > 0, average="weighted"),
        "acc5": mult(2), "acc7": mult(3),
        "mae": mean_absolute_error(y_true, y_pred),
        "corr": np.corrcoef(y_pred, y_true)[0, 1],
    }


@FAST
@given(n=st.integers(3, 60), seed=st.integers(0, 2**31))
def test_regression_parity_with_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y_true = np.round(rng.uniform(-3, 3, n) * 3) / 3  # MOSI-like label steps, zeros included
    y_true[: n // 4] = 0.0
    y_pred = rng.normal(0, 1.8, n)
    ours, ref = M.regression_metrics(y_true, y_pred), mmsa_reference(y_true, y_pred)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


# ----------------------------------------------------------------------------- classification


def test_classification_hand_computed():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    r = M.classification_metrics(y_true, y_pred, num_classes=4)
    assert r["war"] == pytest.approx(4 / 6)
    assert r["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # class 3 absent from truth: not averaged
    assert [r[f"f1_{c}"] for c in range(4)] == pytest.approx([0.8, 0.5, 2 / 3, 0.0])
    assert r["wf1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * (2 / 3)) / 6)
    scores = np.eye(4)[y_pred] * 3.0 - 1.0  # (N, C) logits whose argmax is y_pred
    assert M.classification_metrics(y_true, scores, 4) == r
    assert M.classification_metrics(torch.tensor(y_true), torch.tensor(scores), 4) == r


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn's notes on labels absent from y_true
@FAST
@given(n=st.integers(2, 80), c=st.integers(2, 7), seed=st.integers(0, 2**31))
def test_classification_parity_with_sklearn(n, c, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, c, n)
    scores = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y_true] * rng.random((n, 1))
    y_pred = scores.argmax(1)
    r = M.classification_metrics(y_true, scores, c)
    present = np.unique(y_true)
    assert r["war"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert r["uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
    assert r["uar"] == pytest.approx(recall_score(y_true, y_pred, labels=present, average="macro"), abs=1e-12)
    assert r["wf1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"), abs=1e-12)
    per_class = f1_score(y_true, y_pred, labels=np.arange(c), average=None, zero_division=0)
    assert [r[f"f1_{k}"] for k in range(c)] == pytest.approx(per_class.tolist(), abs=1e-12)


def test_classification_validation():
    with pytest.raises(ValueError, match="columns"):
        M.classification_metrics([0, 1], np.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        M.classification_metrics([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="num_classes"):
        M.classification_metrics([0, 0], [0, 0], 1)


def test_compute_metrics_dispatch():
    assert M.compute_metrics("regression", Y_TRUE, Y_PRED[:, None]) == M.regression_metrics(Y_TRUE, Y_PRED)
    y, s = np.array([0, 1, 2, 1]), np.array([[2, 0, 0], [0, 1, 0], [1, 0, 0], [0, 3, 0.0]])
    assert M.compute_metrics("classification", y, s) == M.classification_metrics(y, s, 3)
    labels = M.compute_metrics("classification", y, s.argmax(1))  # C inferred as max label + 1
    assert set(labels) == {"war", "uar", "wf1", "f1_0", "f1_1", "f1_2"}
    assert labels["war"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown task"):
        M.compute_metrics("ranking", y, s)


def test_metric_registry():
    assert M.metric_direction("mae") == "min"
    assert all(M.metric_direction(n) == "max" for n in M.METRICS if n != "mae")
    assert M.metric_direction("f1_5") == "max" and M.metric_info("f1_5").task == "classification"
    assert M.METRICS["non0_acc2"].label == "Acc2 (non0)"
    for task, name in M.PRIMARY_METRIC.items():
        assert M.METRICS[name].task == task
    with pytest.raises(KeyError, match="unknown metric"):
        M.metric_direction("acc9")
    with pytest.raises(ValueError, match="direction"):
        M.MetricInfo("x", "up", "regression", "X")


# ----------------------------------------------------------------------------- AUILC


def test_auilc_hand_computed():
    assert M.auilc([0.0, 0.5, 1.0], [1.0, 0.0, 1.0]) == pytest.approx(0.5)
    assert M.auilc([0.0, 0.9], [0.8, 0.2]) == pytest.approx(0.5)  # a line: mean of its ends
    rates = [round(0.1 * k, 1) for k in range(10)]
    assert M.auilc(rates, [0.7] * 10) == pytest.approx(0.7)  # a flat curve keeps its value
    assert M.auilc([0.3], [0.42]) == 0.42  # one point: its value
    assert math.isnan(M.auilc([0.0, 1.0], [0.5, float("nan")]))


@FAST
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31))
def test_auilc_matches_trapezoid(k, seed):
    rng = np.random.default_rng(seed)
    rates = np.sort(rng.choice(np.round(np.arange(0, 1.01, 0.1), 1), size=min(k, 11), replace=False))
    values = rng.random(len(rates))
    expected = np.trapezoid(values, rates) / (rates[-1] - rates[0])
    assert M.auilc(rates, values) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "rates, values, match",
    [([0.2, 0.1], [1, 2], "sorted"), ([0.1, 0.1], [1, 2], "sorted"), ([0.1, 0.2], [1], "equal length"),
     ([], [], "at least one"), ([0.0, float("inf")], [1, 2], "finite")],
)
def test_auilc_validation(rates, values, match):
    with pytest.raises(ValueError, match=match):
        M.auilc(rates, values)


def _curves(slopes: dict[tuple[str, int], float], subsets=("t", "tav"), study="s1") -> pd.DataFrame:
    rows = []
    for subset in subsets:
        for seed in (0, 1):
            for k in range(11):
                rate = round(0.1 * k, 1)
                if subset == "tav" and rate == 1.0:
                    continue  # excluded grid cell
                rows.append(dict(study=study, subset=subset, rate=rate, seed=seed, metric="mae",
                                 value=0.5 + slopes[(subset, seed)] * rate))
    return pd.DataFrame(rows)


def test_auilc_table_mean_std_over_seeds_and_full_set_span():
    slopes = {("t", 0): 0.2, ("t", 1): 0.4, ("tav", 0): 1.0, ("tav", 1): 1.0}
    df = pd.concat([_curves(slopes), _curves(slopes, subsets=("t",), study="s2")])
    table = M.auilc_table(df).set_index(["study", "subset"])
    # A linear curve's AUILC is its value at the span's middle: 0.5 + slope * 0.5 (t) or 0.45 (tav).
    t = table.loc[("s1", "t")]
    assert t["auilc_mean"] == pytest.approx(np.mean([0.6, 0.7]))
    assert t["auilc_std"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert (t["n_seeds"], t["n_rates"], t["rate_min"], t["rate_max"]) == (2, 11, 0.0, 1.0)
    tav = table.loc[("s1", "tav")]
    assert tav["auilc_mean"] == pytest.approx(0.95) and tav["auilc_std"] == pytest.approx(0.0)
    assert (tav["n_rates"], tav["rate_max"]) == (10, 0.9)
    assert len(table) == 3  # (s1,t), (s1,tav), (s2,t): extra columns group, nothing merged
    per_seed = M.auilc_per_seed(df)
    assert len(per_seed) == 6 and set(per_seed.columns) >= {"seed", "auilc", "subset", "study"}


def test_auilc_table_refuses_duplicates_and_propagates_nan():
    df = _curves({("t", 0): 0.1, ("t", 1): 0.1, ("tav", 0): 0.1, ("tav", 1): 0.1})
    with pytest.raises(ValueError, match="duplicate"):
        M.auilc_table(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ValueError, match="lacks columns"):
        M.auilc_table(df.drop(columns="seed"))
    df.loc[(df.subset == "t") & (df.seed == 1) & (df.rate == 0.3), "value"] = np.nan
    table = M.auilc_table(df).set_index("subset")
    assert math.isnan(table.loc["t", "auilc_mean"])
    assert table.loc["tav", "auilc_mean"] == pytest.approx(0.5 + 0.1 * 0.45)
