"""Trial explorer (one study): search progress, parallel coordinates, importance, learning curves, Pareto front, trial table."""

import streamlit as st

import page_kit as kit
import views


def failed_only(snap: views.StoreSnapshot, study: str, frame) -> None:
    errors = frame["error"].dropna()
    st.warning(f"Study {study!r} has only failed trials ({len(frame)}): nothing to explore. "
               f"First error: {str(errors.iloc[0]).strip().splitlines()[-1] if len(errors) else 'none recorded'} "
               f"({snap.root}/trials/study={study}).")
    kit.show_table(frame[["trial_id", "status", "error"]], "trial_failed")
    kit.remember("Trial explorer", f"trials_{study}", frame[["trial_id", "status", "error"]], None)


def learning_curves_tab(frame) -> None:
    keys = views.learning_curve_keys(frame)
    if not keys:
        st.info("No learning curves were recorded for these trials.")
        return
    key = st.selectbox("Learning-curve metric", keys, key="trial_lc_key")
    kit.show_chart(views.learning_curves_figure(frame, key), "trial_learning_curves")
    groups = views.curve_distributions(frame)  # e.g. per-combination sampling probabilities
    if groups:
        group = st.selectbox("Distribution over epochs", sorted(groups), key="trial_dist_group")
        trial = st.selectbox("Trial", list(frame["trial_id"]), key="trial_dist_trial")
        kit.show_chart(views.trial_distribution_figure(frame, trial, groups[group]), "trial_distribution")


def explore(snap: views.StoreSnapshot, study: str, frame, objectives) -> None:
    figure = None
    tab_prog, tab_par, tab_imp, tab_lc, tab_pareto, tab_table = st.tabs(
        ["Search progress", "Parallel coordinates", "Importance", "Learning curves", "Pareto front", "Trials"])
    with tab_prog:
        if objectives:
            progress = views.search_progress(frame, *objectives[0])
            kit.show_chart(views.search_progress_figure(progress, objectives[0][0]), "trial_search_progress")
        else:
            st.info("No objective recorded for this study: no search progress to draw.")
    with tab_par:
        if objectives and views.param_columns(frame):
            figure = views.parallel_coordinates_figure(frame, *objectives[0])
            kit.show_chart(figure, "trial_parcoords")
        else:
            st.info("No searched hyper-parameters or objective recorded for this study.")
    with tab_imp:
        table, reason = kit.cached_importances(snap.root, snap.token, study)
        if table is None:
            st.info(reason)
        else:
            st.caption("Optuna's default importance evaluator (PED-ANOVA) over the completed trials, "
                       f"for {objectives[0][0]}.")
            kit.show_chart(views.importance_figure(table, objectives[0][0]), "trial_importance")
            kit.show_table(table, "trial_importance_table")
    with tab_lc:
        learning_curves_tab(frame)
    with tab_pareto:
        if len(objectives) >= 2:
            fig, front = views.pareto_figure(frame, objectives)
            kit.show_chart(fig, "trial_pareto")
            kit.show_table(front, "trial_pareto_table")
        else:
            st.info("Single-objective study: no Pareto front. Multi-objective studies (e.g. robustness vs "
                    "complete-input score) show it here.")
    with tab_table:
        table = views.trial_table(frame, objectives)
        kit.show_table(table, "trial_table")
    kit.remember("Trial explorer", f"trials_{study}", table, figure)


def main() -> None:
    snap = kit.snapshot()
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
    elif (frame["status"] == "failed").all():
        failed_only(snap, study, frame)
    else:
        explore(snap, study, frame, objectives)


main()
