"""Drive the running explorer in Debian's chromium (pip playwright through ``executable_path``;
no browser download): open pages, wait for Streamlit to settle, collect exceptions, screenshot.

Used by the browser test and to refresh the README's screenshots:
``python -m app.screenshots --url http://localhost:8501/ --out docs/screenshots``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
PAGES = {"runs": "Runs", "launch": "Launch", "pareto": "Pareto front", "compare": "Compare two models",
         "listen": "Listen", "masks": "Pruning masks"}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("Debian's chromium is not installed (`make setup` installs it: "
                           "apt-get install chromium)")
    return path


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium(), args=ARGS)


def settle(page, quiet_s: float = 1.0, timeout_s: float = 60.0) -> None:
    """Wait until Streamlit has shown no 'running' indicator for ``quiet_s`` seconds."""
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        busy = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        page.wait_for_timeout(100)
    raise TimeoutError(f"{page.url}: the app kept running for {timeout_s:.0f} s")


DEFAULT_PAGE = "runs"  # served at the root URL


def open_page(page, base_url: str, name: str, query: str = "") -> None:
    path = "" if name == DEFAULT_PAGE else name
    page.goto(f"{base_url.rstrip('/')}/{path}{'?' + query if query else ''}")
    page.wait_for_selector(f"h1:has-text('{PAGES[name]}')", timeout=60_000)
    settle(page)
    wait_for_charts(page)


def wait_for_charts(page, timeout_s: float = 30.0) -> None:
    """Plotly is loaded lazily, seconds after Streamlit is quiet: wait until every graphic
    placeholder that holds no audio or image has drawn a plot (or ``timeout_s`` passes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        graphics = page.locator(".stPrintGraphic").count()
        media = page.locator(".stPrintGraphic:has(audio), .stPrintGraphic:has(img)").count()
        if page.locator(".js-plotly-plot .main-svg").count() and \
                page.locator(".js-plotly-plot").count() >= graphics - media:
            page.wait_for_timeout(500)
            return
        if graphics == media:  # nothing to draw
            page.wait_for_timeout(300)
            if page.locator(".stPrintGraphic").count() == media:
                return
        page.wait_for_timeout(200)


def exceptions(page) -> list[str]:
    """Streamlit exceptions shown on the page (error boxes with a traceback), and its "page not
    found" dialog."""
    found = page.locator('[data-testid="stException"]').all_inner_texts()
    if page.get_by_text("Page not found").count():
        found.append(f"{page.url}: Streamlit says 'Page not found'")
    return found


def shoot(base_url: str, out: Path, queries: dict[str, str] | None = None,
          width: int = 1400, height: int = 1900) -> dict[str, Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = {}
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": width, "height": height})
        for name in PAGES:
            open_page(page, base_url, name, (queries or {}).get(name, ""))
            if errors := exceptions(page):
                raise RuntimeError(f"{name}: {errors[0][:500]}")
            shots[name] = out / f"{name}.png"
            page.screenshot(path=str(shots[name]), full_page=True)
        browser.close()
    return shots


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://localhost:8501/")
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    ap.add_argument("--query", action="append", default=[],
                    help="PAGE=QUERY, e.g. pareto=split=test-clean&x=params")
    a = ap.parse_args()
    qs = dict(q.split("=", 1) for q in a.query)
    for name, path in shoot(a.url, a.out, qs).items():
        print(f"{name}: {path}")
