"""Robustness curves: metric vs missing rate, one mean line and ± std band per study (or selected trial)."""

import streamlit as st

import page_kit as kit
import views


def mixed_datasets_note(agg) -> None:
    keys = sorted(agg["dataset_key"].unique())
    if len(keys) > 1:
        st.info(f"The selected studies use {len(keys)} different datasets ({', '.join(keys)}): each dataset "
                "gets its own panel, curves of different datasets are never drawn on one axis.")


def selectors(choices: dict) -> dict:
    """The five curve selectors, initialised to views.default_curve_selection."""
    start = views.default_curve_selection(choices)
    c1, c2, c3, c4, c5 = st.columns(5)
    index = {name: (choices[name].index(start[name]) if start[name] in choices[name] else 0) for name in start}
    return {"split": c1.selectbox("Split", choices["split"], index=index["split"], key="curve_split"),
            "metric": c2.selectbox("Metric", choices["metric"], format_func=views.metric_label, key="curve_metric"),
            "pattern": c3.selectbox("Pattern", choices["pattern"], index=index["pattern"], key="curve_pattern"),
            "fill": c4.selectbox("Fill", choices["fill"], index=index["fill"], key="curve_fill"),
            "subset": c5.selectbox("Missing subset", choices["subset"], format_func=views.subset_display,
                                   index=index["subset"], key="curve_subset")}


def main() -> None:
    snap = kit.snapshot()
    st.header("Robustness curves")
    if snap.curves.empty:
        st.info(f"No robustness curves in the store yet ({snap.root}/curves): they are written after a "
                "study evaluates its selected trials.")
        return
    studies = kit.choose_studies(snap, "curve_studies")
    pick = selectors(views.curve_choices(snap.curves[snap.curves["study"].isin(studies)] if studies else snap.curves))
    metric, pattern, fill, split = pick["metric"], pick["pattern"], pick["fill"], pick["split"]
    if not studies:
        st.info("Choose one or more studies.")
        return
    if metric is None:
        st.info("The selected studies have no intra-modality curves.")
        return
    agg = views.aggregate_curves(snap.curves, snap.trials, studies, metric=metric, pattern=pattern, fill=fill,
                                 split=split)
    missing = sorted(set(studies) - set(agg["study"]))
    if missing:
        st.warning(f"No {metric} curves with pattern={pattern}, fill={fill}, split={split} for: {', '.join(missing)}.")
    if agg.empty:
        return
    mixed_datasets_note(agg)
    view = st.radio("View", ("One subset", "All 7 subsets"), horizontal=True, key="curve_view")
    if view == "One subset":
        table = agg[agg["subset"] == pick["subset"]]
        fig = views.curves_figure(table, metric, title=views.subset_curves_title(metric, pick["subset"], pattern, fill))
    else:
        fig, table = views.small_multiples_figure(agg, metric), agg
    st.caption("Lines: mean over seeds (training and mask seeds); bands: ± one standard deviation.")
    kit.show_chart(fig, "curve_chart")
    with st.expander("Curve points"):
        kit.show_table(table, "curve_table")
    kit.remember("Robustness curves", "robustness_curves", table, fig)


main()
