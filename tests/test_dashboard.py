"""The Streamlit dashboard: pure view logic and every page driven with AppTest on stores built here."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectune.metrics import auilc
from affectune.missing import INTER_CONDITIONS, RATES, SUBSETS, subset_label
from affectune.store import open_store

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
sys.path.insert(0, str(REPO / "dashboard"))
import views  # noqa: E402

from streamlit.testing import v1 as ST  # noqa: E402

DATASET_A = ("synthetic-mosi", "a1" * 16)
DATASET_B = ("synthetic-iemocap", "b2" * 16)
TRAIN_SEEDS, MASK_SEEDS = (0, 1), (0, 1)


# ----------------------------------------------------------------------------- store fixture


def curve_value(method_offset: float, metric: str, subset: str, rate: float, train_seed: int, seed: int) -> float:
    """A deterministic curve: degrades with the rate, more when more modalities are missing."""
    slope = 0.1 * len(subset)
    noise = 0.01 * (train_seed - 0.5) + 0.005 * (seed - 0.5)
    if metric in ("mae",):
        return 0.7 + method_offset + slope * rate + noise
    return 0.8 - method_offset - slope * rate + noise


def _lineage(method: str, dataset: tuple[str, str]) -> dict:
    return {"method": method, "dataset": dataset[0], "fingerprint": dataset[1], "code_version": "0.1.0+gtest",
            "config": {"model": method}}


def write_study(store, name: str, method: str, dataset: tuple[str, str], objective: list[dict], *,
                trials: list[dict], metrics: tuple[str, ...], offset: float, patterns=("random", "block"),
                inter: bool = True) -> None:
    store.write_study({"study": name, "method": method, "dataset": dataset[0], "fingerprint": dataset[1],
                       "search_space": {"lr": "loguniform"}, "objective": objective, "code_version": "0.1.0+gtest",
                       "config": {"model": method}})
    lineage = _lineage(method, dataset)
    for trial in trials:
        store.write_trial(name, {**lineage, "config": {"model": method, **trial["params"]}, **trial})
    for k, trial in enumerate(t for t in trials if t.get("selected")):  # each selected config: curves
        write_evaluation(store, name, trial["trial_id"], lineage, metrics=metrics, offset=offset + 0.01 * k,
                         patterns=patterns, inter=inter)


def write_evaluation(store, name: str, trial_id: str, lineage: dict, *, metrics, offset: float, patterns,
                     inter: bool) -> None:
    rows, summary = [], []
    for pattern in patterns:
        for metric in metrics:
            for s in SUBSETS:
                label = subset_label(s)
                rates = [r for r in RATES if not (len(s) == 3 and r == 1.0)]
                per_seed = []
                for ts in TRAIN_SEEDS:
                    for ms in MASK_SEEDS:
                        values = [curve_value(offset, metric, label, r, ts, ms) for r in rates]
                        per_seed.append(auilc(rates, values))
                        rows += [{"split": "test", "pattern": pattern, "fill": "zero", "condition": "intra",
                                  "subset": label, "rate": r, "seed": ms, "train_seed": ts, "metric": metric,
                                  "value": v} for r, v in zip(rates, values)]
                summary.append({"split": "test", "pattern": pattern, "fill": "zero", "subset": label,
                                "metric": metric, "auilc": float(np.mean(per_seed)),
                                "auilc_std": float(np.std(per_seed, ddof=1)), "n_seeds": len(per_seed)})
        if inter and pattern == "random":
            for metric in metrics:
                for k, available in enumerate(INTER_CONDITIONS):
                    for ts in TRAIN_SEEDS:
                        rows.append({"split": "test", "pattern": pattern, "fill": "zero", "condition": "inter",
                                     "subset": subset_label(available), "rate": 1.0, "seed": 0, "train_seed": ts,
                                     "metric": metric, "value": 0.5 + offset + 0.01 * k + 0.001 * ts})
    store.write_curves(name, trial_id, pd.DataFrame(rows), lineage=lineage)
    store.write_summary(name, trial_id, pd.DataFrame(summary), lineage=lineage)


def _trial(i: int, status: str, mae: float, *, selected=False, pareto=False, valmask=None, epochs=3) -> dict:
    lc = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "val_mae": mae + 0.1 * (epochs - e - 1),
           "objective": mae + 0.1 * (epochs - e - 1)} for e in range(epochs)]
    row = {"trial_id": f"t{i:03d}", "status": status, "seed": i,
           "params": {"lr": 10 ** (-4 + 0.5 * i), "hidden": 32 * (1 + i % 3), "optimizer": ["adam", "adamw"][i % 2]},
           "epochs_run": epochs, "wall_time_s": 10.0 + i, "num_parameters": 1000 * (1 + i % 3),
           "learning_curve": lc, "val_mae": mae, "val_non0_acc2": 0.9 - mae / 2, "objective": mae,
           "selected": selected, "pareto": pareto}
    row["best_val_mae"] = mae  # the runner's best-epoch value of each objective metric
    if valmask is not None:
        row["valmask_mae"] = row["best_valmask_mae"] = valmask
    return row


def build_store(root: Path) -> Path:
    """Three studies on dataset A (dqf, cider, multi-objective umdf), one on B, one failed-only."""
    store = open_store(str(root))
    single = [{"metric": "val_mae", "mode": "min"}]
    dqf = [_trial(i, "completed" if i < 5 else "stopped", mae, selected=(i == 2))
           for i, mae in enumerate([0.9, 0.8, 0.7, 0.85, 0.75, 1.1])]
    write_study(store, "dqf_mosi", "dqf", DATASET_A, single, trials=dqf, metrics=("mae", "non0_acc2"), offset=0.0)
    cider = [_trial(i, "completed", mae, selected=(i == 1)) for i, mae in enumerate([0.95, 0.82])]
    cider.append({**_trial(2, "failed", float("nan")), "error": "Traceback...\nRuntimeError: CUDA out of memory"})
    write_study(store, "cider_mosi", "cider", DATASET_A, single, trials=cider, metrics=("mae", "non0_acc2"),
                offset=0.05)
    multi = [{"metric": "val_mae", "mode": "min"}, {"metric": "valmask_mae", "mode": "min"}]
    # (val, valmask): t000 (0.7, 1.0) and t001 (0.8, 0.9) and t003 (0.9, 0.85) are non-dominated; t002 is not
    points = [(0.7, 1.0), (0.8, 0.9), (0.85, 0.95), (0.9, 0.85)]
    umdf = [_trial(i, "completed", v, valmask=m, selected=i in (0, 1), pareto=i in (0, 1, 3))
            for i, (v, m) in enumerate(points)]
    write_study(store, "umdf_mosi_mo", "umdf", DATASET_A, multi, trials=umdf, metrics=("mae",), offset=0.02,
                patterns=("random",))
    iemo = [_trial(i, "completed", mae, selected=(i == 0)) for i, mae in enumerate([0.5, 0.6, 0.55])]
    write_study(store, "dqf_iemocap", "dqf", DATASET_B, [{"metric": "val_mae", "mode": "min"}], trials=iemo,
                metrics=("mae", "war"), offset=0.1, patterns=("random",), inter=False)
    failed = [{**_trial(i, "failed", float("nan")), "error": f"ValueError: bad config {i}"} for i in range(2)]
    write_study(store, "broken_study", "mculora", DATASET_A, single, trials=failed, metrics=(), offset=0.0)
    return root


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("store") / "results")


PAGE_SCRIPTS = {"Studies overview": "overview.py", "Robustness curves": "robustness.py", "AUILC tables": "auilc.py",
                "Trial explorer": "trials.py", "Downloads": "downloads.py"}
"""Page title -> its script in dashboard/app_pages/ (app.PAGES)."""


def goto(at, page: str):
    """Open another page of the multipage app, as following its navigation link does."""
    at.switch_page(f"app_pages/{PAGE_SCRIPTS[page]}").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run_app(root: Path | str, monkeypatch, page: str | None = None):
    monkeypatch.setenv("AFFECTUNE_STORE", str(root))
    at = ST.AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at if page is None else goto(at, page)


def charts(at) -> list[dict]:
    """Figure JSON of every Plotly chart on the page (AppTest shows them as UnknownElements)."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def mean_traces(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t.get("meta") == "mean"]


def shown_table(at, key: str):
    """The dataframe the app shows inside the container keyed `key` (see app.show_table)."""
    def walk(node):
        if getattr(node, "key", None) == key:
            return node
        for child in getattr(node, "children", {}).values():
            if (found := walk(child)) is not None:
                return found
        return None

    block = walk(at._tree)
    if block is None or not block.dataframe:
        raise KeyError(f"no table keyed {key!r} on the page")
    return block.dataframe[0]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


# ----------------------------------------------------------------------------- pure view logic


def test_resolve_store_root_priority(tmp_path):
    env = {"AFFECTUNE_STORE": "/env/store"}
    assert views.resolve_store_root(["--store", str(tmp_path)], env) == str(tmp_path)
    assert views.resolve_store_root(["-q", "tests/x.py"], env) == "/env/store"
    assert views.resolve_store_root([], {}) == str(REPO / "results")


def test_subset_labels_one_order_and_one_notation():
    from affectune.missing import CONDITION_ORDER, SUBSET_ORDER

    # rows in the papers' orders (DQF Table 2, UMDF Table 1); letters always t, a, v as in the labels
    assert [views.subset_display(s) for s in SUBSET_ORDER] == \
        ["{v}", "{a}", "{t}", "{a,v}", "{t,v}", "{t,a}", "{t,a,v}"]
    assert CONDITION_ORDER == ("t", "a", "v", "ta", "tv", "av", "tav")
    assert views.subset_display("vat") == "{t,a,v}" and views.subset_display("not-a-subset") == "not-a-subset"


def test_pareto_front_by_hand_one_rule_for_selection_and_dashboard():
    from affectune.metrics import pareto_front

    values = np.array([[0.7, 1.0], [0.8, 0.9], [0.85, 0.95], [0.9, 0.85], [0.7, 1.1]])
    assert pareto_front(values, ["min", "min"]).tolist() == [True, True, False, True, False]
    # maximising both flips the front to the other corner
    assert pareto_front(values, ["max", "max"]).tolist() == [False, False, True, True, True]
    assert views.pareto_front is pareto_front  # the dashboard draws the front study selection uses


def test_best_cells_respects_direction_and_dataset():
    table = pd.DataFrame({"dataset": ["A", "A", "B"], "study": ["x", "y", "z"], "{v}": [0.5, 0.4, 0.9],
                          "{a}": [0.3, 0.3, 0.1]})
    assert views.best_cells(table, ["{v}", "{a}"], "min") == {(1, "{v}"), (0, "{a}"), (1, "{a}"), (2, "{v}"),
                                                             (2, "{a}")}
    assert views.best_cells(table, ["{v}"], "max") == {(0, "{v}"), (2, "{v}")}
    with pytest.raises(ValueError, match="direction"):
        views.best_cells(table, ["{v}"], "lower")


def test_change_token_follows_writes(tmp_path):
    root = tmp_path / "s"
    assert views.change_token(str(root)) == "missing"
    store = open_store(str(root))
    store.write_study({"study": "a", "method": "dqf", "dataset": "d", "fingerprint": "f"})
    first = views.change_token(str(root))
    assert first == views.change_token(str(root))
    store.write_study({"study": "b", "method": "dqf", "dataset": "d", "fingerprint": "f"})
    assert views.change_token(str(root)) != first


def test_aggregate_curves_mean_and_std_over_seeds(store_root):
    snap = views.load_snapshot(str(store_root))
    agg = views.aggregate_curves(snap.curves, snap.trials, ["dqf_mosi"], metric="mae", pattern="random",
                                 fill="zero")
    point = agg[(agg["subset"] == "v") & (agg["rate"] == 0.5)].iloc[0]
    values = [curve_value(0.0, "mae", "v", 0.5, ts, ms) for ts in TRAIN_SEEDS for ms in MASK_SEEDS]
    assert point["n"] == 4
    assert point["mean"] == pytest.approx(np.mean(values))
    assert point["std"] == pytest.approx(np.std(values, ddof=1))
    assert len(agg) == 7 * 11 - 1  # {t,a,v} at rate 1.0 is not in the grid


def test_param_importances_and_too_few_trials(store_root):
    snap = views.load_snapshot(str(store_root))
    frame = views.trial_frame(snap.trials, "dqf_mosi")
    table, reason = views.param_importances(frame, [("best_val_mae", "min")])
    assert reason == ""
    assert set(table["parameter"]) <= {"lr", "hidden", "optimizer"} and len(table) >= 1
    assert table["importance"].sum() == pytest.approx(1.0)
    few = views.trial_frame(snap.trials, "cider_mosi")
    table, reason = views.param_importances(few, [("best_val_mae", "min")])
    assert table is None and "at least 3 completed trials" in reason and "has 2" in reason


# ----------------------------------------------------------------------------- pages (AppTest)


def test_overview_page(store_root, monkeypatch):
    at = run_app(store_root, monkeypatch)
    assert at.header[0].value == "Studies overview"
    table = shown_table(at, "overview_table").value.set_index("study")
    assert sorted(table.index) == ["broken_study", "cider_mosi", "dqf_iemocap", "dqf_mosi", "umdf_mosi_mo"]
    assert table.loc["dqf_mosi", ["trials", "completed", "stopped", "failed"]].tolist() == [6, 5, 1, 0]
    assert table.loc["cider_mosi", "failed"] == 1
    assert table.loc["dqf_mosi", "best_validation"] == pytest.approx(0.7)  # min MAE, completed + stopped
    assert table.loc["dqf_mosi", "wall_time_s"] == pytest.approx(sum(10.0 + i for i in range(6)))
    assert table.loc["dqf_mosi", "fingerprint"] == DATASET_A[1]
    warnings = texts(at.warning)
    assert any("broken_study" in w and "only failed trials (2)" in w and "bad config" in w for w in warnings)
    at.multiselect(key="overview_methods").set_value(["dqf"]).run()
    assert sorted(shown_table(at, "overview_table").value["study"]) == ["dqf_iemocap", "dqf_mosi"]
    at.multiselect(key="overview_datasets").set_value([DATASET_B[0]]).run()
    assert shown_table(at, "overview_table").value["study"].tolist() == ["dqf_iemocap"]


def test_robustness_page_one_line_and_band_per_study(store_root, monkeypatch):
    at = run_app(store_root, monkeypatch, "Robustness curves")
    assert at.header[0].value == "Robustness curves"
    # default: every study of the largest dataset (A) that has curves
    assert sorted(at.multiselect(key="curve_studies").value) == ["cider_mosi", "dqf_mosi", "umdf_mosi_mo"]
    at.multiselect(key="curve_studies").set_value(["dqf_mosi", "cider_mosi"])
    at.selectbox(key="curve_metric").set_value("mae")
    at.selectbox(key="curve_subset").set_value("v").run()
    (fig,) = charts(at)
    lines = mean_traces(fig)
    assert sorted(t["name"] for t in lines) == ["cider_mosi (cider)", "dqf_mosi (dqf)"]
    assert len([t for t in fig["data"] if t.get("meta") == "band"]) == 2
    dqf = next(t for t in lines if t["name"].startswith("dqf"))
    expected = [np.mean([curve_value(0.0, "mae", "v", r, ts, ms) for ts in TRAIN_SEEDS for ms in MASK_SEEDS])
                for r in RATES]
    assert np.allclose(_decode(dqf["y"]), expected)
    assert "MAE" in fig["layout"]["title"]["text"] and "lower is better" in fig["layout"]["title"]["text"]
    assert not at.info  # one dataset: no mixing note

    at.multiselect(key="curve_studies").set_value(["umdf_mosi_mo"]).run()
    assert sorted(t["name"] for t in mean_traces(charts(at)[0])) == ["umdf_mosi_mo/t000 (umdf)",
                                                                      "umdf_mosi_mo/t001 (umdf)"]
    at.multiselect(key="curve_studies").set_value(["dqf_mosi", "cider_mosi"])
    at.radio(key="curve_view").set_value("All 7 subsets").run()
    (fig,) = charts(at)
    assert len(mean_traces(fig)) == 7 * 2
    assert {a["text"] for a in fig["layout"]["annotations"]} >= {f"{DATASET_A[0]} [{DATASET_A[1][:8]}] {{t,a,v}}"}


def _decode(array) -> list[float]:
    """Plotly JSON stores numpy arrays as {"dtype", "bdata"} (base64); lists stay lists."""
    if isinstance(array, dict):
        import base64

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_robustness_page_never_mixes_datasets_on_one_axis(store_root, monkeypatch):
    at = run_app(store_root, monkeypatch, "Robustness curves")
    at.multiselect(key="curve_studies").set_value(["dqf_mosi", "dqf_iemocap"])
    at.selectbox(key="curve_metric").set_value("mae").run()
    assert any("2 different datasets" in i for i in texts(at.info))
    (fig,) = charts(at)
    axes = {t["name"]: t.get("xaxis", "x") for t in mean_traces(fig)}
    assert axes["dqf_mosi (dqf)"] != axes["dqf_iemocap (dqf)"]
    # a metric one study lacks is reported, not silently dropped
    at.selectbox(key="curve_metric").set_value("war").run()
    assert any("No war curves" in w and "dqf_mosi" in w for w in texts(at.warning))
    assert [t["name"] for t in mean_traces(charts(at)[0])] == ["dqf_iemocap (dqf)"]


def test_auilc_page_table_heatmap_and_inter_conditions(store_root, monkeypatch):
    at = run_app(store_root, monkeypatch, "AUILC tables")
    at.selectbox(key="auilc_metric").set_value("mae")
    at.selectbox(key="auilc_pattern").set_value("random").run()
    table = shown_table(at, "auilc_table").value
    assert list(table.columns) == ["dataset", "study", "trial_id", "method", "{v}", "{a}", "{t}", "{a,v}", "{t,v}", "{t,a}",
                                   "{t,a,v}", "avg"]
    # the multi-objective study evaluated two selected configs: one row each, never averaged
    assert sorted(zip(table["study"], table["trial_id"])) == [
        ("cider_mosi", "t001"), ("dqf_mosi", "t002"), ("umdf_mosi_mo", "t000"), ("umdf_mosi_mo", "t001")]
    dqf = table.set_index("study").loc["dqf_mosi"]
    rates = list(RATES)
    expected_v = np.mean([auilc(rates, [curve_value(0.0, "mae", "v", r, ts, ms) for r in rates])
                          for ts in TRAIN_SEEDS for ms in MASK_SEEDS])
    assert dqf["{v}"] == pytest.approx(expected_v)
    # MAE: lower is better, and dqf has the smallest offset, so every best cell is dqf's row
    styles = shown_table(at, "auilc_table").proto.arrow_data.styler.styles
    import re

    bold_cells = re.findall(r"row(\d+)_col(\d+)", styles.split("{")[0])
    dqf_row = table.index[table["study"] == "dqf_mosi"][0]
    assert "font-weight: bold" in styles
    assert sorted(int(c) for _, c in bold_cells) == list(range(4, 12))  # 7 subsets + avg
    assert {int(r) for r, _ in bold_cells} == {dqf_row}
    assert any("lower is better" in c for c in texts(at.caption))
    (heat,) = charts(at)
    assert heat["data"][0]["type"] == "heatmap" and heat["data"][0]["reversescale"] is True
    assert len(heat["data"][0]["y"]) == 4

    conditions = shown_table(at, "inter_table").value
    assert conditions["available"].tolist() == ["{t}", "{a}", "{v}", "{t,a}", "{t,v}", "{a,v}", "{t,a,v}"]
    assert conditions.loc[0, "dqf_mosi · MAE"] == pytest.approx(0.5 + 0.0005)  # mean over the two train seeds
    assert conditions.loc[0, "umdf_mosi_mo/t001 · MAE"] == pytest.approx(0.5 + 0.03 + 0.0005)
    assert conditions.loc[3, "cider_mosi · MAE"] == pytest.approx(0.5 + 0.05 + 0.03 + 0.0005)


def test_trial_explorer_single_objective(store_root, monkeypatch):
    at = run_app(store_root, monkeypatch, "Trial explorer")
    at.selectbox(key="trial_study").set_value("dqf_mosi").run()
    assert at.header[0].value == "Trial explorer"
    figs = charts(at)
    parcoords = next(f for f in figs if f["data"][0]["type"] == "parcoords")
    labels = [d["label"] for d in parcoords["data"][0]["dimensions"]]
    assert sorted(labels[:-1]) == ["hidden", "lr", "optimizer"] and labels[-1] == "best_val_mae"
    importance = shown_table(at, "trial_importance_table").value
    assert importance["importance"].sum() == pytest.approx(1.0)
    curves = next(f for f in figs if f["layout"]["title"]["text"].startswith("Learning curves"))
    assert len(curves["data"]) == 6
    assert any("Single-objective study" in i for i in texts(at.info))
    assert shown_table(at, "trial_table").value["trial_id"].tolist() == [f"t{i:03d}" for i in range(6)]
    # the search progress plot (first tab): six trials of 3 epochs, no start times, so replayed one
    # after another in trial-id order; t005 was stopped by ASHA at its epoch 3
    progress = next(f for f in figs if f["layout"]["title"]["text"].startswith("Search progress"))
    best = next(t for t in progress["data"] if t["name"] == "best so far")
    assert _decode(best["x"]) == list(range(1, 19)) and _decode(best["y"])[-1] == pytest.approx(0.7)
    stopped = next(t for t in progress["data"] if t["name"] == "stopped early")
    assert _decode(stopped["x"]) == [18] and _decode(stopped["y"]) == [pytest.approx(1.1)]


def test_trial_explorer_pareto_failed_and_few(store_root, monkeypatch):
    at = run_app(store_root, monkeypatch, "Trial explorer")
    at.selectbox(key="trial_study").set_value("umdf_mosi_mo").run()
    pareto = next(f for f in charts(at) if f["layout"]["title"]["text"].startswith("Pareto front"))
    front = next(t for t in pareto["data"] if t["name"] == "Pareto front")
    assert sorted(front["text"]) == ["t000", "t001", "t003"]
    at.selectbox(key="trial_study").set_value("cider_mosi").run()
    assert any("at least 3 completed trials" in i for i in texts(at.info))
    at.selectbox(key="trial_study").set_value("broken_study").run()
    assert any("only failed trials (2)" in w and "bad config" in w for w in texts(at.warning))
    assert not charts(at)


def test_downloads_page_works_on_its_own_and_follows_the_pages(store_root, monkeypatch):
    monkeypatch.setenv("AFFECTUNE_STORE", str(store_root))
    # opened first, by its URL: every page's initial table and figure, computed from the store alone
    at = ST.AppTest.from_file(str(APP), default_timeout=60).switch_page("app_pages/downloads.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.header[0].value == "Downloads"
    assert [s.value for s in at.subheader] == ["Studies overview", "Robustness curves", "AUILC tables",
                                               "Trial explorer"]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels.count("Table (CSV)") == 4 and labels.count("Figure (HTML)") == 2  # curves + AUILC heatmap
    assert ("Figure (PNG)" in labels) == (views.chrome_for_png() is not None)
    assert texts(at.caption).count("initial selection") == 4
    # after choosing one study on the robustness page, Downloads offers that view instead
    goto(at, "Robustness curves")
    at.multiselect(key="curve_studies").set_value(["dqf_mosi"]).run()
    goto(at, "Downloads")
    assert texts(at.caption).count("as you last left it") == 1  # the robustness page; the others never ran
    assert texts(at.caption).count("initial selection") == 3


def test_default_downloads_match_each_pages_initial_view(store_root):
    snap = views.load_snapshot(str(store_root))
    items = views.default_downloads(snap)
    curves = pd.read_csv(io.StringIO(items["Robustness curves"]["table_csv"]))
    # the robustness page's defaults: every study of dataset A, MAE, random, zero, subset {t,a,v}
    assert sorted(set(curves["label"])) == ["cider_mosi", "dqf_mosi", "umdf_mosi_mo/t000", "umdf_mosi_mo/t001"]
    assert set(curves["subset"]) == {"tav"}
    dqf = curves[(curves["study"] == "dqf_mosi") & (curves["rate"] == 0.5)].iloc[0]
    assert dqf["mean"] == pytest.approx(np.mean([curve_value(0.0, "mae", "tav", 0.5, ts, ms)
                                                 for ts in TRAIN_SEEDS for ms in MASK_SEEDS]))
    figure = json.loads(items["Robustness curves"]["figure_json"])
    assert "missing {t,a,v} (random, zero; lower is better)" in figure["layout"]["title"]["text"]
    auilc = pd.read_csv(io.StringIO(items["AUILC tables"]["table_csv"]))
    assert sorted(auilc["study"]) == ["cider_mosi", "dqf_mosi", "umdf_mosi_mo", "umdf_mosi_mo"]
    trials = pd.read_csv(io.StringIO(items["Trial explorer"]["table_csv"]))
    assert items["Trial explorer"]["table_name"] == "trials_broken_study" and len(trials) == 2


def test_figure_html_and_png_export(store_root):
    snap = views.load_snapshot(str(store_root))
    agg = views.aggregate_curves(snap.curves, snap.trials, ["dqf_mosi"], metric="mae", pattern="random",
                                 fill="zero", subsets=["v"])
    fig = views.curves_figure(agg, "mae")
    html = views.figure_html(fig)
    assert "<html>" in html and "plotly" in html and "dqf_mosi (dqf)" in html
    # make test installs Debian's chromium (make browser), so the PNG path is always exercised
    assert views.chrome_for_png() is not None, "no Chrome/Chromium for kaleido: run `make browser`"
    png = views.figure_png(fig, width=400, height=300)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_and_missing_store(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for page in ("Studies overview", "Robustness curves", "AUILC tables", "Trial explorer"):
        at = run_app(empty, monkeypatch, page)
        assert any("holds no studies" in i and str(empty) in i for i in texts(at.info))
    at = run_app(tmp_path / "nowhere", monkeypatch)
    assert any("does not exist" in i for i in texts(at.info))


def test_corrupt_and_partial_files_are_reported_and_the_rest_renders(store_root, tmp_path, monkeypatch):
    root = tmp_path / "corrupt"
    shutil.copytree(store_root, root)
    bad_trial = root / "trials" / "study=dqf_mosi" / "trial=t000.parquet"
    bad_trial.write_bytes(b"not a parquet file")
    curves_file = next((root / "curves" / "study=cider_mosi").glob("*.parquet"))
    curves_file.write_bytes(curves_file.read_bytes()[: 200])  # a partial copy
    shutil.rmtree(root / "studies" / "study=umdf_mosi_mo")  # trials without their study record
    at = run_app(root, monkeypatch)
    warnings = texts(at.warning)
    assert any(str(bad_trial) in w for w in warnings)
    assert any(str(curves_file) in w for w in warnings)
    assert any("umdf_mosi_mo" in w and "no readable study record" in w for w in warnings)
    table = shown_table(at, "overview_table").value.set_index("study")
    assert table.loc["dqf_mosi", "trials"] == 5  # the unreadable trial is skipped, the rest is shown
    assert table.loc["umdf_mosi_mo", "method"] == "umdf"
    goto(at, "Robustness curves")
    names = [t["name"] for t in mean_traces(charts(at)[0])]
    assert "dqf_mosi (dqf)" in names and not any(n.startswith("cider_mosi") for n in names)


def test_split_selector_offers_the_splits_the_store_has():
    """A study evaluated on test and ood (StudySpec.eval_splits) offers both, test first; one
    evaluated on test only offers just test."""
    base = {"condition": "intra", "subset": "tav", "rate": 0.0, "seed": 0, "pattern": "random", "fill": "zero",
            "metric": "mae", "value": 1.0}
    both = pd.DataFrame([{**base, "split": "ood"}, {**base, "split": "test"}])
    assert views.curve_choices(both)["split"] == ["test", "ood"]
    assert views.curve_choices(both[both["split"] == "test"])["split"] == ["test"]


# ----------------------------------------------------------------------------- search progress


def test_search_progress_orders_epochs_by_finish_time_and_marks_stopped_trials():
    # a: starts at t=100, epochs of 2 s end at 102, 104, 106; b (stopped after 1 epoch) ends at 103
    curve = lambda values: [{"epoch": e + 1, "val_mae": v, "epoch_time_s": 2.0} for e, v in enumerate(values)]  # noqa: E731
    frame = pd.DataFrame([
        {"trial_id": "a", "status": "completed", "started_at": 100.0, "learning_curve": json.dumps(curve([1.0, 0.9, 0.8]))},
        {"trial_id": "b", "status": "stopped", "started_at": 101.0, "learning_curve": json.dumps(curve([0.85]))},
        {"trial_id": "c", "status": "failed", "started_at": 99.0, "learning_curve": json.dumps(curve([0.1]))}])
    events = views.search_progress(frame, "best_val_mae", "min")
    assert events["trial_id"].tolist() == ["a", "b", "a", "a"]
    assert events["wall_s"].tolist() == [2.0, 3.0, 4.0, 6.0]  # from the first (non-failed) trial's start
    assert events["value"].tolist() == [1.0, 0.85, 0.9, 0.8]
    assert events["best"].tolist() == [1.0, 0.85, 0.85, 0.8]
    fig = views.search_progress_figure(events, "best_val_mae")
    stopped = [t for t in fig.data if t.name == "stopped early"]  # one per panel: epochs, wall time
    assert [list(t.x) for t in stopped] == [[2], [3.0]] and list(stopped[0].y) == [0.85]
    assert list(views.search_progress(frame, "best_val_mae", "max")["best"]) == [1.0, 1.0, 1.0, 1.0]

