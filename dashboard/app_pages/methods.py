"""Methods: comparisons of every method on one protocol (affectune.compare, studies/compare_methods.py).

Curves of all methods on one axis per dataset, DQF's Table 2 and UMDF's Table 1 layouts (mean ± std
over train seeds, the store's best per column in bold, significance against the best), and the
Pareto plot of robustness against complete-input score against parameter count.
"""

import streamlit as st

import page_kit as kit
import views


def choose_comparisons(info) -> list[str]:
    labels = {r["comparison"]: f"{r['comparison']} · {r['dataset_key']} · {len(r['methods'])} methods × "
              f"{r['n_seeds']} seeds" for r in info.to_dict("records")}
    return st.multiselect("Comparisons", info["comparison"].tolist(), default=views.default_comparisons(info),
                          format_func=lambda c: labels.get(c, c), key="methods_comparisons")


PRIMARY = "primary"  # the metric choice that draws each comparison with its own primary metric (MAE, WF1)


def selectors(choices: dict) -> dict:
    """The curve selectors; the metric may be PRIMARY (None in the result: each comparison's own)."""
    pick = kit.curve_selectors(choices, "methods", metrics=[PRIMARY, *choices["metric"]],
                               metric_label=lambda m: "each one's primary metric" if m == PRIMARY
                               else views.metric_label(m))
    return {**pick, "metric": None if pick["metric"] == PRIMARY else pick["metric"]}


def curves_section(comps: views.Comparisons, names: list[str]) -> dict:
    pick = selectors(views.curve_choices(comps.curves[comps.curves["comparison"].isin(names)]))
    if pick["subset"] is None:
        st.info("The chosen comparisons have no intra-modality curves.")
        return pick
    figures = views.comparison_curve_figures(comps, names, **pick)
    if not figures:
        st.info(f"No {views.metric_label(pick['metric'] or 'primary-metric')} curves for pattern={pick['pattern']}, "
                f"fill={pick['fill']}, split={pick['split']} in the chosen comparisons.")
        return pick
    st.caption("One panel per comparison (dataset), every method on its axis. Lines: mean over train seeds × "
               "mask seeds; bands: ± one standard deviation.")
    for column, (metric, agg, fig) in zip(st.columns(len(figures)), figures):
        with column:
            kit.show_chart(fig, f"methods_curves_{metric}")
        kit.remember(f"Methods: curves {views.metric_label(metric)}", f"method_curves_{metric}", agg, fig)
    return pick


def tables_section(comps: views.Comparisons, name: str, split: str, metrics: list[str]) -> None:
    for table, title, key in (("auilc", "AUILC per missing subset (DQF Table 2 layout)", "methods_auilc"),
                              ("inter", "Inter-modality conditions: available modalities (UMDF Table 1 layout)",
                               "methods_inter")):
        st.markdown(f"**{title}**, mean ± std over train seeds; best per column in bold")
        shown, marks = views.comparison_table(comps, name, table, split, metrics)
        if shown.shape[1] <= 1:
            st.info(f"No {table} cells for split={split} and the chosen metrics in comparison {name!r}.")
            continue
        kit.show_table(views.style_marks(shown, marks), f"{key}_{name}")
        if table == "auilc" and (note := views.comparison_significance_note(comps, name, split)):
            st.caption(note)


def pareto_section(comps: views.Comparisons, name: str, split: str, metric: str, colors: dict) -> None:
    points = views.comparison_pareto(comps, name, split)
    if points.empty:
        st.info(f"No AUILC {{t,a,v}} cells or complete-input points for comparison {name!r} on split={split}.")
        return
    fig = views.comparison_pareto_figure(points, metric, colors=colors)
    kit.show_chart(fig, f"methods_pareto_{name}")
    kit.show_table(points, f"methods_pareto_table_{name}",
                   column_config={c: st.column_config.NumberColumn(format="%.4f")
                                  for c in ("robustness", "robustness_std", "complete", "complete_std")})
    kit.remember(f"Methods: Pareto {name}", f"pareto_{name}", points, fig)


def main() -> None:
    snap = kit.snapshot(need_studies=False)
    comps = snap.comparisons
    st.header("Methods")
    info = views.comparison_info(comps)
    if info.empty:
        st.info(f"No method comparisons in the store yet ({snap.root}/comparisons): run "
                "`python studies/compare_methods.py --dataset synthetic:mosi` (or `--smoke-test`).")
        return
    names = choose_comparisons(info)
    if not names:
        st.info("Choose one or more comparisons.")
        return
    pick = curves_section(comps, names)
    primary = info.set_index("comparison").loc[names, "primary_metric"].tolist()
    metrics = views.order_metrics(comps.tables["metric"].dropna().unique()) if not comps.tables.empty else []
    chosen = st.multiselect("Table metrics", metrics, default=[m for m in dict.fromkeys(primary) if m in metrics],
                            format_func=views.metric_label, key="methods_table_metrics")
    kit.remember("Methods: tables", "method_comparison", views.comparison_cells(comps, names), None)
    for tab, name in zip(st.tabs(names), names):
        with tab:
            tables_section(comps, name, pick["split"] or "test", chosen)
            pareto_section(comps, name, pick["split"] or "test", info.set_index("comparison").loc[name, "primary_metric"],
                           views.method_colors(comps, names))


main()
