"""The explorer in a real browser: Debian's chromium driven by pip playwright opens every page of
the running app (started by `asrlab ui --background`, as `make demo` does), clicks a Pareto point
and a play button, watches the Runs page update live while the engine trains, and fails on any
Streamlit exception. Screenshots land in the test's folder (and in $ASRLAB_SCREENSHOTS if set)."""

from __future__ import annotations

import json
import os
import signal
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
    # --port 0: any free port, the one it serves on reported (and kept in ui.json from the start)
    out = filled_lab.cli("ui", "--background", "--port", "0", timeout=90)
    port = json.loads((filled_lab.home / "ui.json").read_text())["port"]
    assert port > 0 and f"http://localhost:{port}/" in out, out
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
    # until the clock moves (at most 10 s): a loaded machine may take a while to start playing
    playing = audio.evaluate(
        "a => a.play().then(() => new Promise(r => { const t0 = Date.now(); const tick = () => {"
        " if (a.currentTime > 0 || Date.now() - t0 > 10000)"
        " r({paused: a.paused, t: a.currentTime, d: a.duration}); else setTimeout(tick, 100); };"
        " tick(); }))")
    assert not playing["paused"] and playing["t"] > 0 and playing["d"] > 0, playing
    snap(page, tmp_path, "listen-playing")


def test_runs_page_updates_live_while_the_engine_trains(page, explorer, filled_lab, tmp_path):
    exp = filled_lab.experiment(steps=40, log_every=5, checkpoint_every=20)
    run_id = json.loads(filled_lab.cli("run", str(exp), "--json"))["run_id"]
    filled_lab.wait_for(lambda: filled_lab.stage(run_id, "model")["state"] == "running"
                        and filled_lab.stage(run_id, "model")["pid"], "training to start")
    # frozen while the page opens: a tiny stage could otherwise be done before it renders
    pid = filled_lab.stage(run_id, "model")["pid"]
    os.killpg(pid, signal.SIGSTOP)
    try:
        shots.open_page(page, explorer, "runs", f"run={run_id}")
        caption = page.locator('[data-testid="stCaptionContainer"]').first
        assert "running" in caption.inner_text()
    finally:
        os.killpg(pid, signal.SIGCONT)
    # no reload: the fragment re-reads the store every 2 s while the supervisor writes it
    page.wait_for_function(
        "() => { const c = document.querySelector('[data-testid=\"stCaptionContainer\"]');"
        " return c && !/running|queued/.test(c.innerText); }", timeout=240_000)
    assert filled_lab.status(run_id)["state"] == "done"
    assert shots.exceptions(page) == []
    snap(page, tmp_path, "runs-after")


# ----- the demo's tiny twin: `make demo`'s graph end to end, then the pages it links ------------
# (last in this file: its models join the lab after the point-count test above has run)
@pytest.fixture(scope="module")
def demo_run(filled_lab):
    """experiments/demo.toml's tiny twin (same stages, tiny sizes) through the supervisor, then
    the same file again with --reuse, as a second `make demo` runs it."""
    exp = filled_lab.demo_twin(utterances=6)
    first = json.loads(filled_lab.cli("run", str(exp), "--json"))["run_id"]
    assert filled_lab.wait(first, timeout=600)["state"] == "done", filled_lab.status(first)
    # as `make demo` runs it the second time: --wait, which prints the results it reused
    out = filled_lab.cli("run", str(exp), "--reuse", "--json", "--wait", timeout=300)
    again = json.loads(out.splitlines()[0])["run_id"]
    assert filled_lab.wait(again)["state"] == "done", filled_lab.status(again)
    assert "no evaluated models yet" not in out and "eval-teacher" in out and first in out, out
    return first, again, json.loads(filled_lab.cli("summary", first, "--json"))


def test_the_demo_twin_has_the_demo_s_stages_and_prints_its_compression_table(
        demo_run, filled_lab):
    import tomllib

    from app.serve import ROOT
    first, again, table = demo_run
    demo = tomllib.loads((ROOT / "experiments" / "demo.toml").read_text())
    twin = {s["name"]: s["kind"] for s in filled_lab.status(first)["stages"]}
    assert twin == {s["name"]: s["kind"] for s in demo["stages"]}
    # one row per model and runtime, on both test sets, each paired with the teacher
    assert table["reference"] == "teacher"
    got = {(r["model"], r["runtime"]) for r in table["rows"]}
    assert got == {("teacher", "torch"), ("kd", "torch"), ("l0", "torch"),
                   ("l0", "sherpa-onnx"), ("l0", "sherpa-onnx-int8")}
    for r in table["rows"]:
        assert set(r["splits"]) == {"test-clean", "test-other"}
        assert r["reference"] or all(c["delta_ci"] for c in r["splits"].values())
    rows = {(r["model"], r["runtime"]): r for r in table["rows"]}
    assert rows[("l0", "torch")]["params"] < rows[("teacher", "torch")]["params"]  # removed
    assert rows[("l0", "sherpa-onnx-int8")]["bytes"] < rows[("l0", "sherpa-onnx")]["bytes"] / 2
    assert table["best"] and table["best"]["model"] in ("kd", "l0")
    assert table["mask_stages"] == [[first, "l0"]]
    # the second run computed nothing and reports the same table
    stages = filled_lab.status(again)["stages"]
    assert all(s["reused_from"] and s["reused_from"].startswith(first) for s in stages)
    reused = json.loads(filled_lab.cli("summary", again, "--json"))
    assert [(r["model"], r["runtime"], r["splits"]) for r in reused["rows"]] == \
        [(r["model"], r["runtime"], r["splits"]) for r in table["rows"]]
    text = filled_lab.cli("summary", first)
    assert "ship: " in text and "/pareto?" in text and "/compare?" in text
    # `make demo` asks for the newest run of the demo by name, whatever else the lab ran since
    name = filled_lab.status(first)["name"]
    assert json.loads(filled_lab.cli("summary", "--name", name, "--json"))["run_id"] == again
    bad = filled_lab.cli("summary", "--name", "no-such-experiment", check=False)
    assert bad.returncode != 0 and "no run of an experiment named 'no-such-experiment'" in bad.stderr


def test_the_demo_s_links_open_pages_with_content(page, explorer, demo_run, tmp_path):
    first, _, table = demo_run
    urls = {k: u.replace(u.split("/")[2], explorer.split("/")[2]) for k, u in
            table["urls"].items()}  # the summary ran before this test's explorer had a port
    assert set(urls) == {"pareto", "compare", "listen", "masks"}
    page.goto(urls["pareto"])
    page.wait_for_selector("h1:has-text('Pareto')", timeout=60_000)
    shots.settle(page)
    points = page.locator(".js-plotly-plot .scatterlayer .trace .points path")
    points.first.wait_for(timeout=60_000)
    assert points.count() == len(table["rows"]) == 5  # only the demo run's models
    assert shots.exceptions(page) == []
    snap(page, tmp_path, "demo-pareto")
    page.goto(urls["compare"])
    page.wait_for_selector("h1:has-text('Compare')", timeout=60_000)
    shots.settle(page)
    body = page.locator("[data-testid='stMain']").first.inner_text()
    best = table["best"]["model"]
    # a selectbox shows its choice as an <input>'s value, which inner_text leaves out
    chosen = page.locator("[data-testid='stSelectbox'] input").evaluate_all(
        "els => els.map(e => e.value)")
    assert any("· teacher @" in c for c in chosen), chosen
    assert any(f"· {best} @" in c for c in chosen), chosen
    assert "shared utterances" in body and shots.exceptions(page) == []
    snap(page, tmp_path, "demo-compare")
    page.goto(urls["masks"])
    page.wait_for_selector("h1:has-text('Masks')", timeout=60_000)
    shots.settle(page)
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=60_000)
    assert "block that lost most" in page.content() and shots.exceptions(page) == []
    page.goto(urls["listen"])
    page.wait_for_selector("h1:has-text('Listen')", timeout=60_000)
    shots.settle(page)
    assert page.locator('audio[data-testid="stAudio"]').count() >= 1
    assert shots.exceptions(page) == []
    snap(page, tmp_path, "demo-listen")
