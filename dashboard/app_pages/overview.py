"""Studies overview: one row per study (method, dataset, trial counts, best validation, wall time)."""

import streamlit as st

import page_kit as kit
import views

snap = kit.snapshot()
st.header("Studies overview")
overview = views.studies_overview(snap)
left, right = st.columns(2)
methods = left.multiselect("Method", sorted(overview["method"].dropna().unique()), key="overview_methods")
datasets = right.multiselect("Dataset", sorted(overview["dataset"].dropna().unique()), key="overview_datasets")
shown = overview
if methods:
    shown = shown[shown["method"].isin(methods)]
if datasets:
    shown = shown[shown["dataset"].isin(datasets)]
for message in views.failed_only_messages(shown, snap):
    st.warning(message)
st.caption(f"{len(shown)} of {len(overview)} studies · best_validation is the best value of each study's "
           "first objective over its completed and stopped trials · wall_time_s sums all its trials.")
kit.show_table(shown, "overview_table",
               column_config={"best_validation": st.column_config.NumberColumn(format="%.4f"),
                              "wall_time_s": st.column_config.NumberColumn(format="%.1f")})
kit.remember("Studies overview", "studies", shown, None)
