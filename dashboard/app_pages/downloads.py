"""Downloads: each page's table (CSV) and figure (HTML, PNG): as last shown, else the page's initial view."""

import plotly.io as pio
import streamlit as st

import page_kit as kit
import views


@st.cache_data(show_spinner="Preparing the default views…", max_entries=8)
def cached_defaults(root: str, token: str) -> dict[str, dict]:
    """views.default_downloads of the store state `token` (figures kept as JSON)."""
    return views.default_downloads(kit.cached_snapshot(root, token))


def offer(page: str, item: dict, png_browser: str | None) -> None:
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
                                    file_name=f"{item['table_name']}.png", mime="image/png", key=f"dl_png_{page}")


def main() -> None:
    snap = kit.snapshot()
    st.header("Downloads")
    shown = st.session_state.get("downloads", {})
    items = {**cached_defaults(snap.root, snap.token), **shown}
    png_browser = views.chrome_for_png()
    if png_browser is None:
        st.info("PNG export needs Chrome or Chromium (kaleido drives it): install Debian's `chromium` or set "
                "BROWSER_PATH. HTML downloads always work.")
    st.caption("Each page's table and figure as you last left it in this session, else in the page's "
               "initial selection.")
    for page, item in items.items():
        st.subheader(page)
        st.caption("as you last left it" if page in shown else "initial selection")
        offer(page, item, png_browser)


main()
