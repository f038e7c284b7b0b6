"""Drive the dashboard in a real headless Chromium (Playwright) and screenshot a page.

    python dashboard/screenshot.py --store results --out docs/img/robustness.png [--studies A B ...]
    python dashboard/screenshot.py --page methods --store results --out docs/img/methods.png

Starts `streamlit run dashboard/app.py` on a free loopback port, waits for /_stcore/health, opens the
page by its URL (/robustness: selects the studies; /methods: the newest comparison of each dataset)
and saves a full-page PNG. Uses the system Chromium (Debian's `chromium`; Playwright cannot
download browsers here). Also used by the browser test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
CHROMIUM_NAMES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
RUNNING = "[data-testid='stApp'][data-test-script-state='running']"


def find_chromium() -> str | None:
    """$AFFECTUNE_CHROMIUM, else the first Chromium on PATH (Debian: /usr/bin/chromium)."""
    if path := os.environ.get("AFFECTUNE_CHROMIUM"):
        return path if os.access(path, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_app(store: str | Path, *, port: int | None = None, timeout_s: float = 90.0,
              log_path: Path | None = None) -> Iterator[str]:
    """Run the dashboard headless on 127.0.0.1 for the duration of the block; yields its URL.

    The server is always terminated (and killed if it does not stop within 10 s).
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--", "--store", str(store)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} before serving {url}"
                                   + (f"; log: {log_path}" if log_path else ""))
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer {url}/_stcore/health within {timeout_s:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log_path:
            log.close()


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit's script run triggered by the last interaction has finished."""
    with contextlib.suppress(Exception):  # a fast rerun may have finished before we look
        page.wait_for_selector(RUNNING, timeout=1_500)
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def open_page(page, url: str, path: str, ready: str) -> None:
    """Load the app's page at `url/path` (each page has its own URL) and wait for the `ready` selector."""
    page.goto(f"{url}/{path}")
    page.wait_for_selector("[data-testid='stSidebar']", timeout=60_000)
    wait_idle(page)
    page.wait_for_selector(ready, timeout=60_000)


def open_robustness(page, url: str, studies: Sequence[str] | None = None) -> None:
    """Open the Robustness curves page by its URL and (optionally) choose exactly `studies`."""
    open_page(page, url, "robustness", ".st-key-curve_studies")
    if studies is None:
        return
    box = page.locator(".st-key-curve_studies")
    clear = box.get_by_role("button", name="Clear all")
    if clear.count():
        clear.first.click()
        wait_idle(page)
    for study in studies:
        choose_option(page, box, study)
        wait_idle(page)
    page.keyboard.press("Escape")
    wait_idle(page)


def choose_option(page, box, text: str, attempts: int = 3) -> None:
    """Type `text` into the multiselect `box` and click its option. On a loaded machine a rerun of
    the app can redraw the widget and close its dropdown under the typing (the option then never
    shows), so the step is retried from a closed dropdown."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, attempts + 1):
        box.locator("input").first.click()
        box.locator("input").first.fill(text)
        try:
            page.get_by_role("option").filter(has_text=text).first.click(timeout=30_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts:
                raise
            page.keyboard.press("Escape")
            wait_idle(page)


def open_methods(page, url: str) -> None:
    """Open the Methods page by its URL and wait until its curves and tables are drawn."""
    open_page(page, url, "methods", ".st-key-methods_comparisons")
    page.wait_for_selector(".js-plotly-plot .scatterlayer .trace path.js-line", state="attached", timeout=60_000)
    page.wait_for_selector("[class*='st-key-methods_auilc_']", timeout=60_000)


def plotted_studies(page) -> list[str]:
    """Names of the mean-line traces of the first Plotly chart on the page (as drawn by plotly.js)."""
    page.wait_for_selector(".js-plotly-plot .scatterlayer .trace path.js-line", state="attached", timeout=60_000)
    return page.evaluate(
        "() => Array.from(document.querySelector('.js-plotly-plot').data)"
        ".filter(t => t.meta === 'mean').map(t => t.name)")


def launch(playwright):
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found: install Debian's package (apt-get install -y chromium; "
                           "`make setup` does it) or set AFFECTUNE_CHROMIUM")
    return playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)


def screenshot_page(store: str | Path, out: str | Path, which: str = "robustness",
                    studies: Sequence[str] | None = None, width: int = 1400, height: int = 1000) -> list[str]:
    """Screenshot a page ("robustness" or "methods") of the store's dashboard to `out`; returns the
    names of the lines in its first chart (studies, or methods)."""
    from playwright.sync_api import sync_playwright

    with serve_app(store) as url, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if which == "methods":
                open_methods(page, url)
            else:
                open_robustness(page, url, studies)
            names = plotted_studies(page)
            page.wait_for_timeout(500)  # let plotly finish its transition
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="study store root")
    parser.add_argument("--out", required=True, help="PNG path to write")
    parser.add_argument("--page", choices=("robustness", "methods"), default="robustness", help="page to capture")
    parser.add_argument("--studies", nargs="*", default=None,
                        help="robustness page: studies to select (default: the app's)")
    parser.add_argument("--width", type=int, default=1400, help="viewport width (px)")
    parser.add_argument("--height", type=int, default=1000,
                        help="viewport height (px): Streamlit scrolls inside the page, so this is what is captured")
    args = parser.parse_args(argv)
    names = screenshot_page(args.store, args.out, args.page, args.studies, width=args.width, height=args.height)
    print(f"wrote {args.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
