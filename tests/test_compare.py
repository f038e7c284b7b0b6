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
