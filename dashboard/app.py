"""affectune dashboard: compare robustness curves across studies (read-only over the study store).

    streamlit run dashboard/app.py -- --store results/

The store root comes from `--store DIR`, else $AFFECTUNE_STORE, else the demo's store (results/).
A multipage app (st.navigation): each page is a script in app_pages/ with its own URL
(/, /robustness, /auilc, /trials, /downloads). This entrypoint runs on every page: it reads the
store snapshot, reports skipped files and runs the page. Tables and figures are built in views.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `streamlit run` does not put dashboard/ on the path
import page_kit as kit  # noqa: E402

PAGES = (  # (script, title, URL path); the first is the default page, served at /
    ("overview.py", "Studies overview", "overview"),
    ("robustness.py", "Robustness curves", "robustness"),
    ("auilc.py", "AUILC tables", "auilc"),
    ("trials.py", "Trial explorer", "trials"),
    ("downloads.py", "Downloads", "downloads"),
)


def main() -> None:
    st.set_page_config(page_title="affectune studies", layout="wide")
    page = st.navigation([st.Page(HERE / "app_pages" / script, title=title, url_path=url, default=k == 0)
                          for k, (script, title, url) in enumerate(PAGES)])
    root = kit.store_root()
    st.sidebar.caption(f"Store: `{root}` (read-only)")
    if st.sidebar.button("Reload store", key="reload"):
        kit.cached_snapshot.clear()
    snap = kit.load()
    for path, message in snap.problems:
        st.warning(f"Skipped or incomplete file {path}: {message}")
    page.run()


main()
