"""The explorer in a real browser: Debian's chromium driven by pip playwright opens every page of
the running app (started by `asrlab ui --background`, as `make demo` does), clicks a Pareto point
and a play button, watches the Runs page update live while the engine trains, and fails on any
Streamlit exception. Screenshots land in the test's folder (and in $ASRLAB_SCREENSHOTS if set)."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from app import screenshots as shots

pytest.importorskip("playwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def explorer(filled_lab):
    port = free_port()
    out = filled_lab.cli("ui", "--background", "--port", str(port), timeout=90)
    assert f"http://localhost:{port}/" in out
    yield f"http://localhost:{port}/"
    filled_lab.cli("ui", "--stop")


@pytest.fixture(scope="module")
def page(explorer):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = shots.launch(p)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def snap(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if os.environ.get("ASRLAB_SCREENSHOTS"):
        Path(os.environ["ASRLAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(os.environ["ASRLAB_SCREENSHOTS"]) / f"{name}.png"),
                        full_page=True)


@pytest.mark.parametrize("name", list(shots.PAGES))
def test_every_page_opens_without_an_exception(page, explorer, tmp_path, name):
    shots.open_page(page, explorer, name)
    assert shots.exceptions(page) == []
    # every page is reachable from the sidebar navigation
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert all(title.split()[0] in nav for title in ("Runs", "Launch", "Pareto", "Compare",
                                                     "Listen", "Masks"))
    snap(page, tmp_path, name)


def test_clicking_a_pareto_point_opens_its_details(page, explorer, tmp_path):
    shots.open_page(page, explorer, "pareto", "split=test-clean")
    points = page.locator(".js-plotly-plot .scatterlayer .trace .points path")
    points.first.wait_for(timeout=60_000)  # plotly draws after Streamlit settles
    # the sweep's two models; the pruning run's base, l0, sparse, las, and l0 in sherpa-onnx int8
    assert points.count() == 7
    box = points.first.bounding_box()  # plotly takes clicks on its drag layer, at the point
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(300)  # hover first, as a user's pointer does
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text("Listen to its worst utterances").wait_for(timeout=30_000)
    shots.settle(page)
    assert "models=" in page.url  # the selection is in the URL, so the view can be shared
    assert shots.exceptions(page) == []
    snap(page, tmp_path, "pareto-selected")
    # the link carries the selection to the Listen page
    page.get_by_text("Listen to its worst utterances").click()
    page.wait_for_selector("h1:has-text('Listen')", timeout=30_000)
    shots.settle(page)
    assert "models=" in page.url and shots.exceptions(page) == []


def test_the_masks_page_draws_a_real_pruning_run(page, explorer, filled_lab, tmp_path):
    shots.open_page(page, explorer, "masks", f"run={filled_lab.prune_run}&stage=l0")
    assert shots.exceptions(page) == []
    body = page.locator("section.main, [data-testid='stMain']").first.inner_text()
    assert "block that lost most" in body and "Which heads died first" in body
    # per-block bars, the unit heatmaps, the history and the head deaths all drew
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 4
    assert page.locator(".js-plotly-plot .heatmaplayer").count() >= 2
    snap(page, tmp_path, "masks-l0")
    shots.open_page(page, explorer, "masks", f"run={filled_lab.prune_run}&stage=sparse")
    assert shots.exceptions(page) == [] and "Unstructured" in page.content()
    snap(page, tmp_path, "masks-sparse")


def test_the_play_button_plays_real_wav_bytes(page, explorer, tmp_path):
    shots.open_page(page, explorer, "listen", "split=test-clean")
    audio = page.locator('audio[data-testid="stAudio"]').first
    src = audio.get_attribute("src")
    with urllib.request.urlopen(src) as r:
        body = r.read()
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    playing = audio.evaluate("a => a.play().then(() => new Promise(r => setTimeout(() => "
                             "r({paused: a.paused, t: a.currentTime, d: a.duration}), 600)))")
    assert not playing["paused"] and playing["t"] > 0 and playing["d"] > 0, playing
    snap(page, tmp_path, "listen-playing")


def test_runs_page_updates_live_while_the_engine_trains(page, explorer, filled_lab, tmp_path):
    exp = filled_lab.experiment(steps=40, log_every=5, checkpoint_every=20)
    run_id = json.loads(filled_lab.cli("run", str(exp), "--json"))["run_id"]
    shots.open_page(page, explorer, "runs", f"run={run_id}")
    caption = page.locator('[data-testid="stCaptionContainer"]').first
    assert "running" in caption.inner_text() or "queued" in caption.inner_text()
    # no reload: the fragment re-reads the store every 2 s while the supervisor writes it
    page.wait_for_function(
        "() => { const c = document.querySelector('[data-testid=\"stCaptionContainer\"]');"
        " return c && !/running|queued/.test(c.innerText); }", timeout=240_000)
    assert filled_lab.status(run_id)["state"] == "done"
    assert shots.exceptions(page) == []
    snap(page, tmp_path, "runs-after")
