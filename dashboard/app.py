"""affectune dashboard: compare robustness curves across studies (read-only over the study store).

    streamlit run dashboard/app.py -- --store results/

The store root comes from `--store DIR`, else $AFFECTUNE_STORE, else the demo's store (results/).
Tables and figures are built in dashboard/views.py; this file only lays them out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `streamlit run` does not put dashboard/ on the path
import views  # noqa: E402

PAGES = ("Studies overview", "Robustness curves", "AUILC tables", "Trial explorer", "Downloads")


@st.cache_data(show_spinner="Reading the study store…", max_entries=8)
def cached_snapshot(root: str, token: str) -> views.StoreSnapshot:
    """The store's tables; `token` (file names, sizes, mtimes) invalidates the cache on change."""
    return views.load_snapshot(root, token)


@st.cache_data(show_spinner="Computing hyper-parameter importance…", max_entries=32)
def cached_importances(root: str, token: str, study: str):
    """views.param_importances of one study (seconds on hundreds of trials), cached per store state."""
    snap = cached_snapshot(root, token)
    frame = views.trial_frame(snap.trials, study)
    objectives = views.objective_columns(frame, views.study_info(snap).set_index("study").loc[study, "objective"])
    return views.param_importances(frame, objectives)


def remember(page: str, table_name: str, table, figure: go.Figure | None) -> None:
    """Keep the page's current table and figure for the Downloads page."""
    st.session_state.setdefault("downloads", {})[page] = {
        "table_name": views.download_name(table_name), "table_csv": table.to_csv(index=False) if table is not None else None,
        "figure_json": figure.to_json() if figure is not None else None,
    }


def preferred(options, value) -> int:
    """Index of the platform default (random pattern, zero fill, test split) among the options."""
    options = list(options)
    return options.index(value) if value in options else 0


def show_table(data, key: str, **kwargs) -> None:
    """st.dataframe inside a keyed container (the key names it for tests and CSS)."""
    with st.container(key=key):
        st.dataframe(data, hide_index=True, **kwargs)


def show_chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False})


# ----------------------------------------------------------------------------- pages


def page_overview(snap: views.StoreSnapshot) -> None:
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
    show_table(shown, "overview_table",
                 column_config={"best_validation": st.column_config.NumberColumn(format="%.4f"),
                                "wall_time_s": st.column_config.NumberColumn(format="%.1f")})
    remember("Studies overview", "studies", shown, None)


def _curve_studies(snap: views.StoreSnapshot, key: str) -> list[str]:
    """Study multiselect (studies with curves); defaults to every study of the largest dataset."""
    info = views.study_info(snap)
    with_curves = sorted(set(snap.curves["study"].dropna().astype(str)))
    if not with_curves:
        return []
    info = info[info["study"].isin(with_curves)]
    keys = [views.dataset_key(d, f) for d, f in zip(info["dataset"], info["fingerprint"])]
    info = info.assign(dataset_key=keys)
    largest = info["dataset_key"].value_counts().index[0]
    default = info.loc[info["dataset_key"] == largest, "study"].tolist()
    labels = {r["study"]: f"{r['study']} · {r['method']} · {r['dataset_key']}" for r in info.to_dict("records")}
    return st.multiselect("Studies", with_curves, default=default, format_func=lambda s: labels.get(s, s), key=key)


def _mixed_datasets_note(agg) -> None:
    keys = sorted(agg["dataset_key"].unique())
    if len(keys) > 1:
        st.info(f"The selected studies use {len(keys)} different datasets ({', '.join(keys)}): each dataset "
                "gets its own panel, curves of different datasets are never drawn on one axis.")


def page_robustness(snap: views.StoreSnapshot) -> None:
    st.header("Robustness curves")
    if snap.curves.empty:
        st.info(f"No robustness curves in the store yet ({snap.root}/curves): they are written after a "
                "study evaluates its selected trials.")
        return
    studies = _curve_studies(snap, "curve_studies")
    choices = views.curve_choices(snap.curves[snap.curves["study"].isin(studies)] if studies else snap.curves)
    c1, c2, c3, c4, c5 = st.columns(5)
    split = c1.selectbox("Split", choices["split"], key="curve_split")
    metric = c2.selectbox("Metric", choices["metric"], format_func=views.metric_label, key="curve_metric")
    pattern = c3.selectbox("Pattern", choices["pattern"], index=preferred(choices["pattern"], "random"),
                           key="curve_pattern")
    fill = c4.selectbox("Fill", choices["fill"], index=preferred(choices["fill"], "zero"), key="curve_fill")
    subset = c5.selectbox("Missing subset", choices["subset"], format_func=views.subset_display,
                          index=len(choices["subset"]) - 1 if choices["subset"] else 0, key="curve_subset")
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
    _mixed_datasets_note(agg)
    direction = "lower is better" if views.direction_of(metric) == "min" else "higher is better"
    view = st.radio("View", ("One subset", "All 7 subsets"), horizontal=True, key="curve_view")
    if view == "One subset":
        one = agg[agg["subset"] == subset]
        fig = views.curves_figure(one, metric, title=f"{views.metric_label(metric)} vs missing rate, "
                                  f"missing {views.subset_display(subset)} ({pattern}, {fill}; {direction})")
        table = one
    else:
        fig, table = views.small_multiples_figure(agg, metric), agg
    st.caption("Lines: mean over seeds (training and mask seeds); bands: ± one standard deviation.")
    show_chart(fig, "curve_chart")
    with st.expander("Curve points"):
        show_table(table, "curve_table")
    remember("Robustness curves", "robustness_curves", table, fig)


def page_auilc(snap: views.StoreSnapshot) -> None:
    st.header("AUILC tables")
    if snap.summary.empty and snap.curves.empty:
        st.info(f"No AUILC summaries or curves in the store yet ({snap.root}/summary).")
        return
    studies = _curve_studies(snap, "auilc_studies") if not snap.curves.empty else \
        sorted(set(snap.summary["study"].astype(str)))
    summary = snap.summary
    c1, c2, c3, c4 = st.columns(4)
    split = c1.selectbox("Split", sorted(summary["split"].dropna().unique(), key=lambda s: s != "test"),
                         key="auilc_split")
    metric = c2.selectbox("Metric", views.order_metrics(summary["metric"].dropna().unique()), format_func=views.metric_label,
                          key="auilc_metric")
    patterns, fills = sorted(summary["pattern"].dropna().unique()), sorted(summary["fill"].dropna().unique())
    pattern = c3.selectbox("Pattern", patterns, index=preferred(patterns, "random"), key="auilc_pattern")
    fill = c4.selectbox("Fill", fills, index=preferred(fills, "zero"), key="auilc_fill")
    st.subheader("AUILC per missing subset (DQF Table 2 layout)")
    table = views.auilc_table(summary, snap.trials, studies, metric=metric, pattern=pattern, fill=fill,
                              split=split) if metric else None
    fig = None
    if table is None or table.empty:
        st.info(f"No AUILC rows for metric={metric}, pattern={pattern}, fill={fill}, split={split} "
                f"({snap.root}/summary).")
    else:
        direction = views.direction_of(metric)
        value_columns = [c for c in table.columns if c not in views.ID_COLUMNS]
        if table["dataset"].nunique() > 1:
            st.info("Rows come from several datasets: the best value is marked per column within each dataset.")
        st.caption(f"Area under the {views.metric_label(metric)} vs missing-rate curve divided by the rate span; "
                   f"best per column in bold ({'lower' if direction == 'min' else 'higher'} is better).")
        show_table(views.style_best(table, value_columns, direction), "auilc_table")
        fig = views.auilc_heatmap(table, metric)
        show_chart(fig, "auilc_heatmap")
    remember("AUILC tables", "auilc", table, fig)

    st.subheader("Inter-modality conditions (UMDF Table 1 layout)")
    inter = snap.curves[snap.curves["condition"] == "inter"] if not snap.curves.empty else snap.curves
    if inter.empty:
        st.info("No inter-modality condition rows (condition='inter') in the store.")
        return
    inter_metrics = st.multiselect("Metrics", views.order_metrics(inter["metric"].unique()),
                                   format_func=views.metric_label, default=views.order_metrics(inter["metric"].unique())[:2], key="inter_metrics")
    inter_fills = sorted(inter["fill"].unique())
    inter_fill = st.selectbox("Fill of the missing modalities", inter_fills, index=preferred(inter_fills, "zero"),
                              key="inter_fill")
    conditions = views.inter_table(snap.curves, snap.trials, studies, metrics=inter_metrics, fill=inter_fill,
                                   split=split)
    if conditions.shape[1] <= 1:
        st.info("No inter-modality rows for the chosen studies, metrics and fill.")
    else:
        st.caption("Rows: the modalities AVAILABLE at test time; values: mean over seeds.")
        show_table(conditions, "inter_table")
        remember("Inter-modality conditions", "inter_conditions", conditions, None)


def page_trials(snap: views.StoreSnapshot) -> None:
    st.header("Trial explorer")
    names = snap.study_names()
    if not names:
        st.info("No studies in the store.")
        return
    info = views.study_info(snap).set_index("study")
    study = st.selectbox("Study", names, key="trial_study",
                         format_func=lambda s: f"{s} · {info.loc[s, 'method']} · {info.loc[s, 'dataset']}")
    frame = views.trial_frame(snap.trials, study)
    objectives = views.objective_columns(frame, info.loc[study, "objective"])
    counts = frame["status"].value_counts().to_dict()
    st.caption(f"{len(frame)} trials: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("completed", "stopped", "failed"))
               + (f" · objective: {', '.join(f'{c} ({m})' for c, m in objectives)}" if objectives else ""))
    if frame.empty:
        st.warning(f"Study {study!r} has no trials ({snap.root}/trials/study={study}).")
        return
    if (frame["status"] == "failed").all():
        errors = frame["error"].dropna()
        st.warning(f"Study {study!r} has only failed trials ({len(frame)}): nothing to explore. "
                   f"First error: {str(errors.iloc[0]).strip().splitlines()[-1] if len(errors) else 'none recorded'} "
                   f"({snap.root}/trials/study={study}).")
        show_table(frame[["trial_id", "status", "error"]], "trial_failed")
        remember("Trial explorer", f"trials_{study}", frame[["trial_id", "status", "error"]], None)
        return
    figure = None
    tab_par, tab_imp, tab_lc, tab_pareto, tab_table = st.tabs(
        ["Parallel coordinates", "Importance", "Learning curves", "Pareto front", "Trials"])
    with tab_par:
        if objectives and views.param_columns(frame):
            figure = views.parallel_coordinates_figure(frame, *objectives[0])
            show_chart(figure, "trial_parcoords")
        else:
            st.info("No searched hyper-parameters or objective recorded for this study.")
    with tab_imp:
        table, reason = cached_importances(snap.root, snap.token, study)
        if table is None:
            st.info(reason)
        else:
            st.caption("Optuna's default importance evaluator (PED-ANOVA) over the completed trials, "
                       f"for {objectives[0][0]}.")
            show_chart(views.importance_figure(table, objectives[0][0]), "trial_importance")
            show_table(table, "trial_importance_table")
    with tab_lc:
        keys = views.learning_curve_keys(frame)
        if keys:
            key = st.selectbox("Learning-curve metric", keys, key="trial_lc_key")
            show_chart(views.learning_curves_figure(frame, key), "trial_learning_curves")
            groups = views.curve_distributions(frame)  # e.g. per-combination sampling probabilities
            if groups:
                group = st.selectbox("Distribution over epochs", sorted(groups), key="trial_dist_group")
                trial = st.selectbox("Trial", list(frame["trial_id"]), key="trial_dist_trial")
                show_chart(views.trial_distribution_figure(frame, trial, groups[group]), "trial_distribution")
        else:
            st.info("No learning curves were recorded for these trials.")
    with tab_pareto:
        if len(objectives) >= 2:
            fig, front = views.pareto_figure(frame, objectives)
            show_chart(fig, "trial_pareto")
            show_table(front, "trial_pareto_table")
        else:
            st.info("Single-objective study: no Pareto front. Multi-objective studies (e.g. robustness vs "
                    "complete-input score) show it here.")
    with tab_table:
        columns = ["trial_id", "status", "selected", "pareto", *[c for c, _ in objectives],
                   *views.param_columns(frame), "epochs_run", "wall_time_s", "num_parameters", "error"]
        table = frame[[c for c in dict.fromkeys(columns) if c in frame]]
        show_table(table, "trial_table")
    remember("Trial explorer", f"trials_{study}", table, figure)


def page_downloads() -> None:
    st.header("Downloads")
    saved = st.session_state.get("downloads", {})
    if not saved:
        st.info("Open a page first: its current table and figure can then be downloaded here.")
        return
    png_browser = views.chrome_for_png()
    if png_browser is None:
        st.info("PNG export needs Chrome or Chromium (kaleido drives it): install Debian's `chromium` or set "
                "BROWSER_PATH. HTML downloads always work.")
    for page, item in saved.items():
        st.subheader(page)
        cols = st.columns(3)
        if item["table_csv"] is not None:
            cols[0].download_button("Table (CSV)", item["table_csv"], file_name=f"{item['table_name']}.csv",
                                    mime="text/csv", key=f"dl_csv_{page}")
        if item["figure_json"] is not None:
            fig = pio.from_json(item["figure_json"])
            cols[1].download_button("Figure (HTML)", views.figure_html(fig), file_name=f"{item['table_name']}.html",
                                    mime="text/html", key=f"dl_html_{page}")
            if png_browser is not None:
                # rendered only on click: kaleido starts a browser, which takes seconds
                cols[2].download_button("Figure (PNG)", lambda fig=fig: views.figure_png(fig),
                                        file_name=f"{item['table_name']}.png", mime="image/png",
                                        key=f"dl_png_{page}")


# ----------------------------------------------------------------------------- main


def main() -> None:
    st.set_page_config(page_title="affectune studies", layout="wide")
    root = views.resolve_store_root(sys.argv[1:], os.environ)
    st.sidebar.title("affectune")
    page = st.sidebar.radio("Page", PAGES, key="page")
    st.sidebar.caption(f"Store: `{root}` (read-only)")
    if st.sidebar.button("Reload store", key="reload"):
        cached_snapshot.clear()
    snap = cached_snapshot(root, views.change_token(root))
    for path, message in snap.problems:
        st.warning(f"Skipped or incomplete file {path}: {message}")
    if page == "Downloads":
        page_downloads()
        return
    if not snap.exists or snap.is_empty:
        where = "does not exist" if not snap.exists else "holds no studies"
        st.info(f"The study store at {root} {where} yet. Run `make demo` (or a script in studies/) to fill it, "
                "or open another store with `streamlit run dashboard/app.py -- --store DIR`.")
        return
    {"Studies overview": page_overview, "Robustness curves": page_robustness, "AUILC tables": page_auilc,
     "Trial explorer": page_trials}[page](snap)


main()
