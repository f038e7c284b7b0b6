"""AUILC tables: DQF's Table 2 layout (studies x missing subsets) and UMDF's Table 1 layout (inter-modality)."""

import streamlit as st

import page_kit as kit
import views


def selectors(summary) -> dict:
    c1, c2, c3, c4 = st.columns(4)
    patterns, fills = sorted(summary["pattern"].dropna().unique()), sorted(summary["fill"].dropna().unique())
    return {"split": c1.selectbox("Split", sorted(summary["split"].dropna().unique(), key=lambda s: s != "test"),
                                  key="auilc_split"),
            "metric": c2.selectbox("Metric", views.order_metrics(summary["metric"].dropna().unique()),
                                   format_func=views.metric_label, key="auilc_metric"),
            "pattern": c3.selectbox("Pattern", patterns, index=views.preferred(patterns, "random"), key="auilc_pattern"),
            "fill": c4.selectbox("Fill", fills, index=views.preferred(fills, "zero"), key="auilc_fill")}


def auilc_section(snap: views.StoreSnapshot, studies: list[str], pick: dict) -> None:
    st.subheader("AUILC per missing subset (DQF Table 2 layout)")
    metric = pick["metric"]
    table = views.auilc_table(snap.summary, snap.trials, studies, **pick) if metric else None
    fig = None
    if table is None or table.empty:
        st.info(f"No AUILC rows for metric={metric}, pattern={pick['pattern']}, fill={pick['fill']}, "
                f"split={pick['split']} ({snap.root}/summary).")
    else:
        direction = views.direction_of(metric)
        value_columns = [c for c in table.columns if c not in views.ID_COLUMNS]
        if table["dataset"].nunique() > 1:
            st.info("Rows come from several datasets: the best value is marked per column within each dataset.")
        st.caption(f"Area under the {views.metric_label(metric)} vs missing-rate curve divided by the rate span; "
                   f"best per column in bold ({'lower' if direction == 'min' else 'higher'} is better).")
        kit.show_table(views.style_best(table, value_columns, direction), "auilc_table")
        fig = views.auilc_heatmap(table, metric)
        kit.show_chart(fig, "auilc_heatmap")
    kit.remember("AUILC tables", "auilc", table, fig)


def inter_section(snap: views.StoreSnapshot, studies: list[str], split: str) -> None:
    st.subheader("Inter-modality conditions (UMDF Table 1 layout)")
    inter = snap.curves[snap.curves["condition"] == "inter"] if not snap.curves.empty else snap.curves
    if inter.empty:
        st.info("No inter-modality condition rows (condition='inter') in the store.")
        return
    metrics = views.order_metrics(inter["metric"].unique())
    chosen = st.multiselect("Metrics", metrics, format_func=views.metric_label, default=metrics[:2],
                            key="inter_metrics")
    fills = sorted(inter["fill"].unique())
    fill = st.selectbox("Fill of the missing modalities", fills, index=views.preferred(fills, "zero"), key="inter_fill")
    conditions = views.inter_table(snap.curves, snap.trials, studies, metrics=chosen, fill=fill, split=split)
    if conditions.shape[1] <= 1:
        st.info("No inter-modality rows for the chosen studies, metrics and fill.")
    else:
        st.caption("Rows: the modalities AVAILABLE at test time; values: mean over seeds.")
        kit.show_table(conditions, "inter_table")
        kit.remember("Inter-modality conditions", "inter_conditions", conditions, None)


def main() -> None:
    snap = kit.snapshot()
    st.header("AUILC tables")
    if snap.summary.empty and snap.curves.empty:
        st.info(f"No AUILC summaries or curves in the store yet ({snap.root}/summary).")
        return
    studies = kit.choose_studies(snap, "auilc_studies") if not snap.curves.empty else \
        sorted(set(snap.summary["study"].astype(str)))
    pick = selectors(snap.summary)
    auilc_section(snap, studies, pick)
    inter_section(snap, studies, pick["split"])


main()
