"""Real-browser test: the dashboard served by `streamlit run`, driven by Playwright in headless Chromium."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "dashboard"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import screenshot  # noqa: E402
from test_dashboard import build_store  # noqa: E402

pytestmark = pytest.mark.browser  # tests/shards.py runs it alone, after the rest


def test_robustness_and_methods_pages_in_headless_chromium(tmp_path):
    if screenshot.find_chromium() is None:
        pytest.fail("Chromium is not installed: the browser test needs Debian's `chromium` "
                    "(`make setup` installs it: apt-get install -y chromium).")
    from playwright.sync_api import sync_playwright

    store = build_store(tmp_path / "results")
    shot = tmp_path / "robustness.png"
    log = tmp_path / "streamlit.log"
    with screenshot.serve_app(store, log_path=log) as url, sync_playwright() as pw:
        browser = screenshot.launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(90_000)  # the suite's background runs can starve the app for a while
            screenshot.open_robustness(page, url, ["dqf_mosi", "cider_mosi"])
            chips = page.locator(".st-key-curve_studies [data-tag]").all_inner_texts()
            assert len(chips) == 2 and any("dqf_mosi" in c for c in chips) and any("cider_mosi" in c for c in chips)
            assert sorted(screenshot.plotted_studies(page)) == ["cider_mosi (cider)", "dqf_mosi (dqf)"]
            # plotly.js drew one mean line and one band per study: 4 scatter traces with an SVG path each
            assert page.locator(".js-plotly-plot .scatterlayer .trace").count() == 4
            assert page.locator(".js-plotly-plot .scatterlayer .trace path.js-line").count() >= 2
            page.screenshot(path=str(shot), full_page=True)
            # the Methods page by its own URL: both fixture datasets' newest comparisons, methods on one axis
            screenshot.open_methods(page, url)
            assert page.url.endswith("/methods")
            assert sorted(screenshot.plotted_studies(page)) == ["dqf", "mult"]  # WF1 first: cmp_iemocap sorts first
            mosi = page.locator(".st-key-methods_auilc_cmp_mosi, .st-key-methods_auilc_cmp_iemocap")
            assert mosi.count() >= 1
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"
