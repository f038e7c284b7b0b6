"""What every dashboard page shares: the cached store snapshot and the widgets' common wrappers.

The entrypoint (app.py) reads the snapshot once per run and keeps it in the session; each page in
app_pages/ takes it from there with `snapshot()`. Tables and figures are built in views.py.
"""

from __future__ import annotations

import os
import sys

import plotly.graph_objects as go
import streamlit as st

import views

SNAPSHOT_KEY = "_snapshot"
"""Session-state key under which app.py leaves this run's snapshot for the page."""


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


def store_root() -> str:
    return views.resolve_store_root(sys.argv[1:], os.environ)


def load() -> views.StoreSnapshot:
    """Read (or take from the cache) the store's snapshot and keep it for this run's page."""
    root = store_root()
    snap = cached_snapshot(root, views.change_token(root))
    st.session_state[SNAPSHOT_KEY] = snap
    return snap


def snapshot(*, need_studies: bool = True) -> views.StoreSnapshot:
    """This run's snapshot; with `need_studies`, an empty or missing store ends the page with a note."""
    snap = st.session_state.get(SNAPSHOT_KEY) or load()
    if need_studies and (not snap.exists or snap.is_empty):
        where = "does not exist" if not snap.exists else "holds no studies"
        st.info(f"The study store at {snap.root} {where} yet. Run `make demo` (or a script in studies/) to fill it, "
                "or open another store with `streamlit run dashboard/app.py -- --store DIR`.")
        st.stop()
    return snap


def choose_studies(snap: views.StoreSnapshot, key: str) -> list[str]:
    """Study multiselect (studies with curves); defaults to every study of the largest dataset."""
    with_curves, default, labels = views.curve_study_options(snap)
    if not with_curves:
        return []
    return st.multiselect("Studies", with_curves, default=default, format_func=lambda s: labels.get(s, s), key=key)


def remember(page: str, table_name: str, table, figure: go.Figure | None) -> None:
    """Keep the page's current table and figure for the Downloads page (which otherwise offers defaults)."""
    st.session_state.setdefault("downloads", {})[page] = views.download_item(table_name, table, figure)


def show_table(data, key: str, **kwargs) -> None:
    """st.dataframe inside a keyed container (the key names it for tests and CSS)."""
    with st.container(key=key):
        st.dataframe(data, hide_index=True, **kwargs)


def show_chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False})
