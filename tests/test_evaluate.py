"""Robustness grid: shape of the tables, reuse of identical inputs, hand-checked cells and AUILC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import affectune.evaluate as evaluate
from affectune.data import load
from affectune.evaluate import format_auilc_table, robustness
from affectune.loader import preload
from affectune.metrics import compute_metrics
from affectune.missing import FULL_SET, SUBSETS, fill_features, frame_mask, parse_subset, subset_label, test_grid
from affectune.models import build_model
from affectune.train import train_loop

SOURCE = "synthetic:mosi?scale=0.25"
N_REG_METRICS = 8


@pytest.fixture(scope="module")
def dataset():
    return load(SOURCE)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A late-fusion model trained on complete inputs: it has something to lose when frames go."""
    out = train_loop({"model": "late_fusion", "model_config": {"hidden": 16}, "dataset": SOURCE, "epochs": 6,
                      "batch_size": 32, "lr": 3e-3, "num_threads": 1, "patience": None,
                      "checkpoint_dir": str(tmp_path_factory.mktemp("ckpt"))}, dataset=dataset)
    from affectune.train import load_checkpoint

    return load_checkpoint(out.checkpoint_path)[0]


@pytest.fixture(scope="module")
def result(trained, dataset):
    return robustness(trained, dataset, seeds=(0, 1))


def test_curve_rows_cover_the_grid_and_inter_conditions(result):
    curves = result.curves
    assert len(test_grid()) == 76
    intra = curves[curves.condition == "intra"]
    inter = curves[curves.condition == "inter"]
    assert len(intra) == 76 * 2 * N_REG_METRICS
    assert len(inter) == 7 * 2 * N_REG_METRICS
    assert inter["rate"].isna().all()
    assert set(inter["subset"]) == {"t", "a", "v", "ta", "tv", "av", "tav"}
    assert not intra.duplicated(["subset", "rate", "seed", "metric"]).any()
    # 1 complete input + 6 whole-modality drops (shared by rate-1.0 cells, inter conditions and seeds)
    # + 7 subsets x 9 partial rates per seed.
    assert result.forward_passes == 1 + 6 + 2 * 63


def test_rate_zero_and_complete_inter_rows_are_the_complete_input(result, trained, dataset):
    test = preload(dataset, "test")
    with torch.inference_mode():
        pred = trained.predict(test.batch(slice(None))).numpy()
    expected = compute_metrics("regression", test.label.numpy(), pred)
    assert result.complete == pytest.approx(expected, abs=1e-6)
    c = result.curves
    zero = c[(c.condition == "intra") & (c.rate == 0.0)]
    assert len(zero) == 7 * 2 * N_REG_METRICS
    for row in zero.itertuples():
        assert row.value == result.complete[row.metric]
    full = c[(c.condition == "inter") & (c.subset == "tav")]
    assert all(row.value == result.complete[row.metric] for row in full.itertuples())


def test_one_cell_recomputed_by_hand(result, trained, dataset):
    split = dataset.splits["test"]
    subset, rate, seed = parse_subset("ta"), 0.3, 1
    inputs = {}
    for m in ("text", "audio", "vision"):
        x = split.features(m)
        if m in subset:
            mask = frame_mask(split.ids, split.lengths[m], x.shape[1], m, rate, seed=seed, pattern="random")
            x = fill_features(x, mask, fill="zero")
        inputs[m] = x
    batch = preload(dataset, "test").batch(slice(None))
    batch = batch.replace(**{m: torch.from_numpy(np.ascontiguousarray(v)) for m, v in inputs.items()})
    with torch.inference_mode():
        pred = trained.predict(batch).numpy()
    expected = compute_metrics("regression", split.label_reg, pred)
    c = result.curves
    got = c[(c.subset == "ta") & (c.rate == rate) & (c.seed == seed) & (c.condition == "intra")]
    assert dict(zip(got.metric, got.value)) == pytest.approx(expected, abs=1e-6)


def test_rate_one_equals_the_inter_condition_without_those_modalities(result):
    c = result.curves
    for s in SUBSETS:
        if s == FULL_SET:
            continue
        dropped = c[(c.condition == "intra") & (c.subset == subset_label(s)) & (c.rate == 1.0) & (c.seed == 0)]
        avail = c[(c.condition == "inter") & (c.subset == subset_label(FULL_SET - s)) & (c.seed == 0)]
        assert len(dropped) == N_REG_METRICS
        assert dict(zip(dropped.metric, dropped.value)) == dict(zip(avail.metric, avail.value)), subset_label(s)


def test_auilc_matches_a_hand_computation(result):
    c = result.curves
    per_seed = []
    for seed in (0, 1):
        curve = c[(c.condition == "intra") & (c.subset == "ta") & (c.metric == "mae") & (c.seed == seed)]
        curve = curve.sort_values("rate")
        r, v = curve["rate"].tolist(), curve["value"].tolist()
        area = sum((r[i + 1] - r[i]) * (v[i + 1] + v[i]) / 2 for i in range(len(r) - 1))
        per_seed.append(area / (r[-1] - r[0]))
    row = result.summary[(result.summary.subset == "ta") & (result.summary.metric == "mae")].iloc[0]
    assert row.auilc == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert row.auilc_std == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
    assert row.n_seeds == 2
    tav = result.summary[(result.summary.subset == "tav") & (result.summary.metric == "mae")].iloc[0]
    assert (tav.rate_min, tav.rate_max) == (0.0, 0.9)  # ({t,a,v}, 1.0) is not a cell
    assert len(result.summary) == 7 * N_REG_METRICS


def test_curves_fall_as_the_rate_rises_for_a_trained_model(result):
    c = result.curves
    curve = c[(c.condition == "intra") & (c.subset == "tav") & (c.metric == "mae")].groupby("rate")["value"].mean()
    assert curve[0.0] < curve[0.5] < curve[0.9]  # MAE: higher is worse
    corr = c[(c.condition == "intra") & (c.subset == "tav") & (c.metric == "corr")].groupby("rate")["value"].mean()
    assert corr[[0.0, 0.1, 0.2, 0.3]].mean() > corr[[0.6, 0.7, 0.8, 0.9]].mean()


def test_two_models_see_identical_inputs(monkeypatch, dataset, trained):
    seen: dict[str, list] = {"a": [], "b": []}
    current = {"who": "a"}
    original = evaluate.predict_split

    def recording(model, data, batch_size, *args):
        seen[current["who"]].append(tuple(data.features[m].clone() for m in ("text", "audio", "vision")))
        return original(model, data, batch_size, *args)

    monkeypatch.setattr(evaluate, "predict_split", recording)
    subsets = (parse_subset("tv"), parse_subset("a"))
    robustness(trained, dataset, seeds=(3,), subsets=subsets, rates=(0.0, 0.4, 1.0), include_inter=False)
    current["who"] = "b"
    other = build_model("late_fusion", {"hidden": 8}, dataset.spec())
    robustness(other, dataset, seeds=(3,), subsets=subsets, rates=(0.0, 0.4, 1.0), include_inter=False)
    assert len(seen["a"]) == len(seen["b"]) == 5  # complete, tv@0.4, tv@1, a@0.4, a@1
    for xa, xb in zip(seen["a"], seen["b"]):
        assert all(torch.equal(u, v) for u, v in zip(xa, xb))


def test_gaussian_fill_and_block_pattern_change_inputs_but_not_the_complete_cell(trained, dataset):
    r = robustness(trained, dataset, seeds=(0,), patterns=("random", "block"), fills=("zero", "gaussian"),
                   subsets=(parse_subset("tav"),), rates=(0.0, 0.5), include_inter=False)
    mae = r.curves[r.curves.metric == "mae"].set_index(["pattern", "fill", "rate"])["value"]
    assert len({mae[(p, f, 0.0)] for p in ("random", "block") for f in ("zero", "gaussian")}) == 1
    assert len({mae[(p, f, 0.5)] for p in ("random", "block") for f in ("zero", "gaussian")}) == 4
    assert r.forward_passes == 1 + 4


def test_format_auilc_table_rows_in_dqf_order(result):
    text = format_auilc_table(result.summary)
    lines = text.splitlines()
    assert lines[0] == "AUILC on test (pattern=random, fill=zero, seeds=2)"
    assert [ln.split()[0] for ln in lines[3:]] == ["{v}", "{a}", "{t}", "{a,v}", "{t,v}", "{t,a}", "{t,a,v}"]
    assert "MAE" in lines[1] and "Acc7" in lines[1]
    row = result.summary[(result.summary.subset == "t") & (result.summary.metric == "acc7")].iloc[0]
    assert f"{row.auilc:.4f}±{row.auilc_std:.4f}" in lines[5]
    with pytest.raises(ValueError, match="not in the summary"):
        format_auilc_table(result.summary, metrics=["wf1"])


def test_bad_arguments_are_rejected(trained, dataset):
    with pytest.raises(ValueError, match="no split 'ood2'"):
        robustness(trained, dataset, split="ood2")
    with pytest.raises(ValueError, match="patterns"):
        robustness(trained, dataset, patterns=("stripes",))
    with pytest.raises(ValueError, match="seeds"):
        robustness(trained, dataset, seeds=())
