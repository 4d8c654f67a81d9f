"""One AppTest per page of the explorer, against the DuckDB file the real engine filled.

AppTest cannot run fragments, click plotly points or play audio (streamlit#9242 and AppTest's limits): those are
covered by the browser test; selection -> model ids is tested directly in test_logic.py.
"""

from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from app import data
from engine.config import ConfigError, parse_experiment, toml_data

from .conftest import ROOT

APP = str(ROOT / "streamlit_app.py")


def page(name: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(f"app/pages/{name}.py")
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


@pytest.fixture(autouse=True)
def _home(filled_lab, monkeypatch):
    monkeypatch.setenv("ASRLAB_HOME", str(filled_lab.home))
    monkeypatch.chdir(ROOT)


# ----- Runs ----------------------------------------------------------------------------------------
def test_runs_lists_every_run_and_shows_a_stage(filled_lab):
    at = ok(page("runs"))
    run_box = at.selectbox(key="run")
    assert set(filled_lab.runs) <= set(run_box.options)
    run_box.set_value(filled_lab.runs[0]).run()
    at.selectbox(key="stage").set_value("model").run()
    ok(at)
    # the URL carries the selection so the view can be shared
    assert at.query_params["run"] == [filled_lab.runs[0]] or at.query_params["run"] == \
        filled_lab.runs[0]
    buttons = {b.label: b for b in at.button}
    assert buttons["Cancel run"].disabled and buttons["Resume run"].disabled  # a finished run


# ----- Launch --------------------------------------------------------------------------------------
def test_launch_previews_a_file_and_reports_errors_as_the_cli_does():
    at = ok(page("launch", file="tiny.toml"))
    assert 'name = "tiny"' in at.code[0].value and "eval_every = 20" in at.code[0].value
    area = at.text_area(key="text-tiny.toml")
    area.set_value(area.value.replace('kind = "evaluate"', 'kind = "evaluat"')).run()
    ok(at)
    # the CLI's own message, naming the stage, the key and what is allowed
    with pytest.raises(ConfigError) as cli:
        parse_experiment(toml_data(area.value, "experiments/tiny.toml"), "experiments/tiny.toml")
    assert [e.value for e in at.error] == [str(cli.value)]
    assert "stages[2].kind: unknown stage kind 'evaluat'" in at.error[0].value
    area.set_value("name = \n").run()
    assert "experiments/tiny.toml: invalid TOML" in at.error[0].value


def test_launch_builds_and_submits_a_real_run(filled_lab, tiny):
    at = ok(page("launch"))
    at.radio(key="mode").set_value("build one").run()
    at.text_input(key="name").set_value("from-the-form").run()
    at.text_input(key="corpus").set_value(str(tiny)).run()
    at.text_input(key="tags").set_value("ui, form").run()
    ok(at)
    preview = at.code[0].value
    assert 'name = "from-the-form"' in preview and 'tags = ["ui", "form"]' in preview
    at.selectbox(key="add_kind").set_value("export").run()
    next(b for b in at.button if b.label == "add stage").click().run()
    ok(at)
    assert "[[stages]]\nkind = \"export\"" in at.code[0].value
    at.selectbox(key="add_kind").set_value("distill").run()
    next(b for b in at.button if b.label == "add stage").click().run()
    ok(at)
    assert 'kind = "distill"\nname = "distill4"\nteacher = "model"' in at.code[0].value
    # a bad value is refused with the field named, before anything is submitted
    at.number_input(key="vocab").set_value(8).run()
    at.text_input(key="corpus").set_value(str(tiny / "missing")).run()
    at.button(key="submit").click().run()
    assert any("no such" in e.value or "missing" in e.value for e in at.error), \
        [e.value for e in at.error]
    at.text_input(key="corpus").set_value(str(tiny)).run()
    at.number_input(key="vocab").set_value(64).run()
    at.button(key="submit").click().run()
    ok(at)
    assert at.success, [e.value for e in at.error]
    run_id = at.success[0].value.split(": ")[-1].split(",")[0]
    st = filled_lab.status(run_id)
    assert st["name"] == "from-the-form" and [s["kind"] for s in st["stages"]] == [
        "train", "evaluate", "export", "distill"]
    filled_lab.cli("cancel", run_id, check=False)  # it may have ended already: nothing to cancel
    filled_lab.wait(run_id)


def test_launch_sends_to_a_ray_cluster_checked_as_the_cli_does(filled_lab):
    at = ok(page("launch"))
    at.radio(key="executor").set_value("ray").run()
    at.text_input(key="ray_address").set_value("127.0.0.1:1").run()
    at.button(key="submit").click().run()
    assert any("--address 127.0.0.1:1: no Ray cluster answers there" in e.value
               for e in at.error), [e.value for e in at.error]
    at.text_input(key="ray_address").set_value("").run()
    at.text_input(key="storage").set_value("/nonexistent/shared").run()
    at.button(key="submit").click().run()
    assert any("--storage /nonexistent/shared: no such folder" in e.value for e in at.error)
    assert not at.success


def test_launch_builds_pruning_stages_validated_as_the_cli_does():
    at = ok(page("launch"))
    at.radio(key="mode").set_value("build one").run()
    for kind in ("prune_l0", "prune_magnitude"):
        at.selectbox(key="add_kind").set_value(kind).run()
        next(b for b in at.button if b.label == "add stage").click().run()
        ok(at)
    toml = at.code[0].value
    exp = parse_experiment(toml_data(toml, "preview"), "preview")
    l0, mag = exp.stages[2], exp.stages[3]
    assert (l0.kind, l0.model, l0.teacher, l0.prune.target) == ("prune_l0", "model", "model", 0.5)
    assert l0.kd.layerwise_weight == 1.0 and l0.prune.finetune_steps == 100
    assert (mag.kind, mag.model, mag.prune.sparsity, mag.kd.loss) == ("prune_magnitude", "model",
                                                                      0.6, "yblank")
    assert not at.error


def test_launch_builds_shared_models_and_sherpa_exports():
    at = ok(page("launch"))
    at.radio(key="mode").set_value("build one").run()
    sid, eid = (s["id"] for s in at.session_state["stages"])
    at.number_input(key=f"layers-{sid}").set_value(6).run()
    at.selectbox(key=f"share-{sid}").set_value("repeat").run()
    at.number_input(key=f"phys-{sid}").set_value(3).run()
    # scoring in sherpa-onnx before any export: the preview says what the CLI would say
    at.selectbox(key=f"rt-{eid}").set_value("sherpa-onnx").run()
    assert any("needs an earlier export stage" in e.value for e in at.error)
    at.button(key=f"rm-{eid}").click().run()
    for kind in ("export", "evaluate"):
        at.selectbox(key="add_kind").set_value(kind).run()
        next(b for b in at.button if b.label == "add stage").click().run()
    xid, eid = (s["id"] for s in at.session_state["stages"][1:])
    at.selectbox(key=f"fmt-{xid}").set_value("sherpa-onnx").run()
    at.checkbox(key=f"int8-{xid}").check().run()
    at.selectbox(key=f"rt-{eid}").set_value("sherpa-onnx").run()
    at.checkbox(key=f"eint8-{eid}").check().run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    exp = parse_experiment(toml_data(at.code[0].value, "preview"), "preview")
    m, x, ev = exp.stages
    assert (m.model.blocks, m.model.share, m.model.physical_blocks) == (6, "repeat", 3)
    assert (x.format, x.int8, ev.runtime, ev.int8) == ("sherpa-onnx", True, "sherpa-onnx", True)


# ----- Pareto --------------------------------------------------------------------------------------
def ours(lab, split: str, choice: str = "final", step: int | None = None):
    """The models of the fixture's sweep (other tests add runs to the shared lab)."""
    return data.models(lab.home, split, choice, step, runs=lab.runs)


def test_pareto_lists_the_front_and_opens_a_selected_model(filled_lab):
    at = ok(page("pareto", split="test-clean", runs=filled_lab.runs))
    front = at.dataframe[0].value
    models = ours(filled_lab, "test-clean")
    assert len(models) == 2 and set(front["model"]) <= set(models["model"])
    assert "2 models" in texts(at)
    # the URL's selection opens the model's details, with links to Compare and Listen
    key = models["model"].iloc[0]
    at = ok(page("pareto", split="test-clean", models=key, x="params"))
    assert at.multiselect(key="sel").value == [key]
    assert any(key in m.value for m in at.markdown)
    assert len(at.get("page_link")) >= 2  # to Listen and to Compare


def test_pareto_chooses_which_evaluation_counts(filled_lab):
    home = filled_lab.home
    final = ours(filled_lab, "test-clean", "final")
    best = ours(filled_lab, "test-clean", "best-dev")
    early = ours(filled_lab, "test-clean", "step", step=15)
    assert set(final["step"]) == {30} and set(early["step"]) == {10}
    for run_id in filled_lab.runs:
        evals = data.stage_evals(home, run_id, "model")
        dev = evals[(evals.split == "dev") & (evals.evaluated_by == "model")]
        chosen = best[best.run_id == run_id]["step"].item()
        assert dev.set_index("step")["wer"][chosen] == dev["wer"].min()
    at = ok(page("pareto", split="test-clean", choice="step", step="15", runs=filled_lab.runs))
    assert at.number_input(key="step").value == 15
    assert set(at.dataframe[-1].value["step"]) == {10}
    at = ok(page("pareto", split="test-clean", choice="step", step="5"))
    assert any("No model has an evaluation" in w.value for w in at.warning)
    # a hand-edited link: no exception box, the default step and a note saying why
    at = ok(page("pareto", split="test-clean", choice="step", step="abc"))
    assert at.number_input(key="step").value == 1000
    assert "Ignored `step=abc`" in texts(at)


def test_pareto_filters_by_run_and_tag(filled_lab):
    at = ok(page("pareto", split="test-clean", runs=filled_lab.runs[0]))
    assert "1 models" in texts(at)
    at = ok(page("pareto", split="test-clean", tag="explorer-test", runs=filled_lab.runs))
    assert "2 models" in texts(at)


# ----- Compare -------------------------------------------------------------------------------------
def test_compare_shows_the_paired_difference_and_word_diffs(filled_lab):
    a, b = ours(filled_lab, "test-clean")["model"].tolist()
    at = ok(page("compare", a=a, b=b, split="test-clean"))
    labels = [m.label for m in at.metric]
    assert "B − A, 95% paired-bootstrap interval" in labels
    res = data.compare(filled_lab.home, a, b, "test-clean")
    shown = next(m for m in at.metric if m.label.startswith("B − A")).value
    assert shown == f"[{res['ci'][0]:+.2f}, {res['ci'][1]:+.2f}]"
    assert res["utterances"] == 12
    at.checkbox(key="only").uncheck().run()
    ok(at)
    table = at.dataframe[0].value
    assert len(table) == 12 and list(table["delta"].abs()) == sorted(table["delta"].abs(),
                                                                      reverse=True)
    assert any("errors)" in m.value for m in at.markdown)  # the word-level diff of A and B


# ----- Listen --------------------------------------------------------------------------------------
def test_listen_plays_an_utterance_and_shows_each_hypothesis(filled_lab):
    keys = ours(filled_lab, "test-clean")["model"].tolist()
    at = ok(page("listen", split="test-clean", models=keys))
    table = at.dataframe[0].value
    assert list(table["errors"]) == sorted(table["errors"], reverse=True)  # worst first
    assert at.get("audio"), "no audio player"
    assert not at.warning, [w.value for w in at.warning]
    hyp_lines = [m.value for m in at.markdown if "error(s)" in m.value]
    assert len(hyp_lines) == 2
    # search by text
    word = table["reference"].iloc[0].split()[0]
    at.text_input(key="q").set_value(word).run()
    ok(at)
    assert all(word.lower() in r.lower() for r in at.dataframe[0].value["reference"])
    assert at.query_params["q"] in (word, [word])


# ----- Masks ---------------------------------------------------------------------------------------
def test_masks_shows_what_a_real_pruning_run_kept(filled_lab):
    run = filled_lab.prune_run
    at = ok(page("masks", run=run, stage="l0"))
    assert at.selectbox(key="pruned").value == f"{run}/l0"
    steps = data.mask_steps(filled_lab.home, run, "l0")
    # logged at intervals while training (every 4 steps) and at the end
    assert steps[:3] == [4, 8, 12] and steps[-1] == 24
    metrics = {m.label: m.value for m in at.metric}
    final = data.masks(filled_lab.home, run, "l0", 24)
    blocks = final[final["module"] == "block"]
    kept = (blocks["size"] * blocks["kept_fraction"]).sum() / blocks["size"].sum()
    assert metrics["encoder parameters kept"] == f"{kept:.1%}"
    worst = int(blocks.sort_values("kept_fraction").iloc[0]["block"])
    assert metrics["block that lost most"] == f"block {worst}"
    heads = final[final["unit"] == "heads"]
    assert metrics["attention heads kept"] == \
        f"{sum(sum(k) for k in heads['kept'])} of {int(heads['size'].sum())}"
    # the slider goes back over the training steps; the page follows and keeps it in the URL
    at.select_slider(key="mask_step").set_value(steps[0]).run()
    ok(at)
    assert at.query_params["step"] in (str(steps[0]), [str(steps[0])])
    early = {m.label: m.value for m in at.metric}["encoder parameters kept"]
    assert float(early.rstrip("%")) >= float(metrics["encoder parameters kept"].rstrip("%"))
    at.radio(key="colour").set_value("prob").run()
    ok(at)
    # side by side with the magnitude-pruned model of the same run
    at.selectbox(key="other").set_value(f"{run}/sparse").run()
    ok(at)
    assert at.query_params["vs"] in (f"{run}/sparse", [f"{run}/sparse"])
    # the magnitude stage: unstructured, its tensors' kept shares
    at = ok(page("masks", run=run, stage="sparse"))
    assert "Unstructured" in texts(at)
    m = data.masks(filled_lab.home, run, "sparse", data.mask_steps(filled_lab.home, run, "sparse")[-1])
    w = m[m["unit"] == "weights"]
    assert (w["size"] * (1 - w["kept_fraction"])).sum() / w["size"].sum() == pytest.approx(0.6, abs=0.01)


def test_listen_shows_a_two_pass_models_n_best(filled_lab):
    run = filled_lab.prune_run
    ev = data.evaluated(filled_lab.home)
    key = ev[(ev.run_id == run) & (ev.model_stage == "las") & (ev.split == "test-clean")
             ]["model"].iloc[0]
    utt = data.hyps(filled_lab.home, key, "test-clean")["cut_id"].iloc[0]
    at = ok(page("listen", split="test-clean", models=key, utt=utt))
    assert any("two-pass" in e.label for e in at.expander)
    table = next(d.value for d in at.dataframe if "LAS log P" in d.value.columns)
    assert table["chosen"].sum() == 1 and len(table) >= 1
    hyp = data.hypotheses_of(filled_lab.home, [key], "test-clean", utt)[0]
    assert table[table["chosen"]]["hypothesis"].iloc[0] == hyp["hypothesis"]


def test_pruned_models_are_points_on_the_pareto_page(filled_lab):
    models = data.models(filled_lab.home, "test-clean", runs=[filled_lab.prune_run])
    models = models[models["runtime"] == "torch"]  # the int8 point of l0: the next test
    by = {m: r for m, r in zip(models["model_stage"], models.to_dict("records"))}
    assert by["l0"]["method"] == "prune_l0" and by["sparse"]["method"] == "prune_magnitude"
    assert by["l0"]["params"] < by["base"]["params"]
    assert by["sparse"]["bytes"] < 0.7 * by["base"]["bytes"]
    assert by["sparse"]["nonzero_params"] < 0.6 * by["sparse"]["params"]
    ok(page("pareto", split="test-clean", runs=filled_lab.prune_run))


def test_int8_points_sit_beside_their_fp32_model(filled_lab):
    models = data.models(filled_lab.home, "test-clean", runs=[filled_lab.prune_run])
    l0 = models[models["model_stage"] == "l0"].set_index("runtime")
    assert set(l0.index) == {"torch", "sherpa-onnx-int8"}, models[["model_stage", "runtime"]]
    q, fp = l0.loc["sherpa-onnx-int8"], l0.loc["torch"]
    assert q["method"] == "prune_l0 · sherpa-onnx-int8" and q["params"] == fp["params"]
    assert q["bytes"] < 0.6 * fp["bytes"]
    at = ok(page("pareto", split="test-clean", runs=filled_lab.prune_run))
    shown = next(d.value for d in at.dataframe if "runtime" in d.value.columns)
    assert "sherpa-onnx-int8" in set(shown["runtime"])


def test_pages_without_a_store_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("ASRLAB_HOME", str(tmp_path / "empty"))
    for name in ("runs", "pareto", "compare", "listen", "masks"):
        at = ok(page(name))
        assert at.info, name


def test_pages_read_while_the_supervisor_writes(filled_lab):
    """No cached connection: a page renders while a run is being trained and written."""
    exp = filled_lab.experiment(steps=200, log_every=2, checkpoint_every=50)
    run_id = json.loads(filled_lab.cli("run", str(exp), "--json"))["run_id"]
    try:
        filled_lab.wait_for(lambda: (filled_lab.stage(run_id, "model").get("last_metrics")
                                     or {}).get("step", 0) >= 4, "training to log", 120)
        seen = set()
        for _ in range(4):
            at = ok(page("runs", run=run_id))
            seen.add(at.selectbox(key="run").value)
            time.sleep(0.5)
        assert seen == {run_id}
        ok(page("pareto"))
    finally:  # it may have finished by now: then there is nothing to cancel
        filled_lab.cli("cancel", run_id, check=False)
        filled_lab.wait(run_id)


def test_masks_names_the_first_head_to_die(tmp_path, monkeypatch):
    """A store (written by the real single writer) where heads die at different steps: the
    page names the first one and draws without error."""
    from engine.store import Writer

    home = tmp_path / "lab"
    w = Writer(home / "lab.duckdb")
    w.add("runs", {"run_id": "r1", "name": "heads", "config": "{}", "created": 1.0})
    w.add("stages", {"run_id": "r1", "name": "l0", "kind": "prune_l0", "position": 0})
    for step, kept in ((10, [[1, 1], [1, 1]]), (20, [[1, 1], [1, 0]]), (30, [[0, 1], [1, 0]])):
        for b in (0, 1):
            w.add("masks", {"run_id": "r1", "stage": "l0", "step": step, "block": b,
                            "module": "attn", "unit": "heads", "size": 2,
                            "kept_fraction": sum(kept[b]) / 2, "kept": json.dumps(kept[b]),
                            "prob": json.dumps([0.9 if k else 0.1 for k in kept[b]]), "ts": 0.0})
            w.add("masks", {"run_id": "r1", "stage": "l0", "step": step, "block": b,
                            "module": "block", "unit": "params", "size": 100,
                            "kept_fraction": sum(kept[b]) / 2, "ts": 0.0})
    w.flush()
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    at = ok(page("masks", run="r1", stage="l0"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["first head to die"] == "b1 h1 @ 20"
    assert metrics["attention heads kept"] == "2 of 4"
    assert metrics["block that lost most"] in ("block 0", "block 1")


def _two_corpora_lab(home):
    """A store (written by the real single writer) with models scored on two corpora whose cut
    ids coincide, as every built-in tier's do: two runs on builtin:demo, one on builtin:full."""
    from engine.store import Writer

    w = Writer(home / "lab.duckdb")
    for i, (run, corpus) in enumerate((("rd1", "builtin:demo"), ("rd2", str(home / "corpora" /
                                                                        "demo")),
                                       ("rf", "builtin:full"))):
        w.add("runs", {"run_id": run, "name": run, "created": float(i),
                       "config": json.dumps({"data": {"corpus": corpus}, "stages": []})})
        w.add("stages", {"run_id": run, "name": "m", "kind": "train", "position": 0})
        w.add("evals", {"run_id": run, "stage": "m", "split": "test-clean", "step": 10,
                        "model_stage": "m", "wer": 10.0 + i, "wer_lo": 9.0 + i,
                        "wer_hi": 11.0 + i, "utterances": 4, "params": 1000 * (i + 1),
                        "bytes": 4000 * (i + 1), "ts": 0.0, "runtime": "torch"})
        for k in range(4):
            w.add("hyps", {"run_id": run, "stage": "m", "split": "test-clean", "step": 10,
                           "cut_id": f"test-clean-{k:06d}", "reference": f"{corpus} {k}",
                           "hypothesis": "x", "ref_words": 2, "substitutions": 1,
                           "deletions": 0, "insertions": 0})
    w.flush()


def test_models_of_different_corpora_are_never_paired_or_plotted_together(tmp_path,
                                                                          monkeypatch):
    home = tmp_path / "lab"
    (home / "corpora" / "demo").mkdir(parents=True)
    _two_corpora_lab(home)
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    models = data.models(home, "test-clean")
    # the lab's own folder of a built-in tier is that tier
    assert dict(zip(models.run_id, models.corpus)) == {
        "rd1": "builtin:demo", "rd2": "builtin:demo", "rf": "builtin:full"}
    assert data.main_corpus(models) == "builtin:demo"
    # the same cut ids on two corpora are different utterances: no pairing
    res = data.compare(home, "rd1/m/10", "rf/m/10", "test-clean")
    assert res["utterances"] == 0 and res["corpora"] == ("builtin:demo", "builtin:full")
    assert data.compare(home, "rd1/m/10", "rd2/m/10", "test-clean")["utterances"] == 4
    assert [h["model"] for h in data.hypotheses_of(
        home, ["rd1/m/10", "rf/m/10", "rd2/m/10"], "test-clean", "test-clean-000001")] == \
        ["rd1/m/10", "rd2/m/10"]
    # the Pareto page shows one corpus, the most common by default, and says what it left out
    at = ok(page("pareto"))
    assert at.selectbox(key="corpus").value == "builtin:demo"
    assert "1 scored on other corpora are left out" in texts(at)
    at = ok(page("pareto", corpus="builtin:full"))
    assert "2 scored on other corpora are left out" in texts(at)
    at = ok(page("compare", split="test-clean", a="rd1/m/10", b="rf/m/10"))
    assert at.error and "cannot be paired" in at.error[0].value


def test_the_run_filter_keeps_the_models_a_run_reused(tmp_path, monkeypatch):
    """A run of a `--reuse` sweep computed few of its models: filtering the Pareto page by it
    shows every model it holds, wherever the model was computed, and no model of its source
    run that it did not take."""
    from engine.store import Writer

    home = tmp_path / "lab"
    w = Writer(home / "lab.duckdb")
    cfg = json.dumps({"data": {"corpus": "builtin:demo"}, "stages": []})
    for i, run in enumerate(("src", "again")):
        w.add("runs", {"run_id": run, "name": run, "created": float(i), "config": cfg})
    for i, name in enumerate(("a", "b")):
        w.add("stages", {"run_id": "src", "name": name, "kind": "train", "position": i})
        w.add("evals", {"run_id": "src", "stage": name, "split": "test-clean", "step": 10,
                        "model_stage": name, "wer": 10.0 + i, "wer_lo": 9.0, "wer_hi": 12.0,
                        "utterances": 4, "params": 1000 * (i + 1), "bytes": 4000 * (i + 1),
                        "ts": 0.0, "runtime": "torch"})
    w.add("stages", {"run_id": "again", "name": "a", "kind": "train", "position": 0,
                     "reused_from": "src/a"})
    w.flush()
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    assert data.run_stages(home, ["again"]) == {("src", "a")}
    at = ok(page("pareto", runs="again"))
    assert "1 models" in texts(at)
    at = ok(page("pareto", runs="src"))
    assert "2 models" in texts(at)


def test_results_of_an_older_beam_search_are_marked_and_hidden(tmp_path, monkeypatch):
    """A run whose two-pass stages were computed by an older beam search (their stored identity
    carries SEARCH_VERSION 1) beside a run of the current code: the store keeps both, the
    explorer knows which stages the current code would compute differently, and the Pareto page
    hides their evaluations by default and says so."""
    from engine.runner import graph
    from engine.store import Writer

    from engine.config import load_experiment

    exp = load_experiment(ROOT / "experiments" / "tiny_seeds.toml")
    now = graph.stage_hashes(exp)
    monkeypatch.setattr(graph, "SEARCH_VERSION", graph.SEARCH_VERSION - 1)
    before = graph.stage_hashes(exp)
    monkeypatch.undo()
    changed = {n for n in now if now[n] != before[n]}
    assert {"teacher-las", "eval-teacher-las", "s3-deep"} <= changed and "teacher" not in changed

    home = tmp_path / "lab"
    w = Writer(home / "lab.duckdb")
    cfg = exp.model_dump_json()
    for i, (run, hashes) in enumerate((("old", before), ("new", now))):
        w.add("runs", {"run_id": run, "name": run, "created": float(i), "config": cfg})
        for k, st_ in enumerate(exp.stages):
            w.add("stages", {"run_id": run, "name": st_.name, "kind": st_.kind, "position": k,
                             "stage_hash": hashes[st_.name]})
        for k, stage in enumerate(("eval", "eval-teacher-las")):
            w.add("evals", {"run_id": run, "stage": stage, "split": "test-clean", "step": 10,
                            "model_stage": stage.removeprefix("eval-") if k else "teacher",
                            "wer": 10.0 + k + 5 * i, "wer_lo": 9.0, "wer_hi": 20.0,
                            "utterances": 4, "params": 1000 * (k + 1), "bytes": 4000 * (k + 1),
                            "ts": 0.0, "runtime": "torch"})
    w.flush()
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    assert data.superseded(home) == {("old", n) for n in changed}
    # `asrlab results` marks the same ones
    from engine.runner import client

    assert {(r["run_id"], r["stage"]): r["superseded"] for r in client.results(home)} == {
        ("old", "eval"): False, ("old", "eval-teacher-las"): True,
        ("new", "eval"): False, ("new", "eval-teacher-las"): False}
    assert [r["superseded"] for r in client.results(home, "old")] == [False, True]
    models = data.models(home, "test-clean")
    assert dict(zip(models["model"], models["superseded"])) == {
        "old/eval/10": False, "old/eval-teacher-las/10": True,
        "new/eval/10": False, "new/eval-teacher-las/10": False}
    at = ok(page("pareto"))
    assert "3 models" in texts(at)
    assert "1 computed by an older recipe or beam search are hidden" in texts(at)
    at = ok(page("pareto", superseded="1"))
    assert "4 models" in texts(at) and "are hidden" not in texts(at)
