"""The compression table's text: each paired difference says whether it is significant."""

from urllib.parse import parse_qs, urlsplit

from engine.report import best_model, explorer_urls, format_table, pareto_url, source_runs


def _cell(wer, delta=None, ci=None):
    return {"wer": wer, "wer_ci": [wer - 1, wer + 1], "utterances": 10, "delta": delta,
            "delta_ci": ci}


def test_each_difference_is_marked_by_its_interval():
    rows = [{"model": "teacher", "method": "train teacher", "runtime": "torch", "bytes": 33_000_000,
             "macs_per_second": 1.5e8, "reference": True, "splits": {"test-clean": _cell(8.0)}}]
    for name, delta, ci in (("same", 0.5, [-1.0, 2.0]), ("worse", 3.0, [1.0, 5.0]),
                            ("better", -2.0, [-3.0, -1.0])):
        rows.append({"model": name, "method": "distill", "runtime": "torch", "bytes": 9_000,
                     "macs_per_second": 5e7, "reference": False,
                     "splits": {"test-clean": _cell(8.0 + delta, delta, ci)}})
    lines = format_table({"run_id": "r", "reference": "teacher", "splits": ["test-clean"],
                          "rows": rows})
    assert "(reference)" in lines[1] and "33.00 MB" in lines[1]
    assert "n.s." in lines[2] and "worse" in lines[3] and "better" in lines[4]
    assert "9.0 kB" in lines[2]


def test_the_pareto_url_selects_the_run():
    assert pareto_url("http://localhost:8501/", "run-1", "test-other") == \
        "http://localhost:8501/pareto?split=test-other&runs=run-1"


def _row(model, nbytes, wer, ci=None, reference=False, runtime="torch"):
    delta = None if ci is None else (ci[0] + ci[1]) / 2
    return {"model": model, "method": "m", "runtime": runtime, "bytes": nbytes,
            "macs_per_second": 1e7, "reference": reference, "keys": {"test-clean": f"r/{model}/1"},
            "splits": {"test-clean": _cell(wer, delta, ci)}}


def _table(*rows, masks=()):
    return {"run_id": "r", "reference": "teacher", "splits": ["test-clean"], "rows": list(rows),
            "mask_stages": [list(m) for m in masks]}


def test_the_model_to_ship_is_the_smallest_within_three_points_at_the_interval_s_top():
    t = _table(_row("teacher", 6_000_000, 10.0, reference=True),
               _row("kd", 4_700_000, 10.5, [-0.5, 1.5]),
               _row("l0", 3_100_000, 11.0, [0.0, 2.5]),
               _row("l0-int8", 900_000, 12.5, [1.0, 3.5], runtime="sherpa-onnx"),  # too close to call
               _row("tiny", 100_000, 40.0, [28.0, 32.0]))
    best = best_model(t)
    assert best["model"] == "l0" and best["within"] and best["key"] == "r/l0/1"
    # none within: the lowest WER among the compressed, and the reason says so
    t = _table(_row("teacher", 6_000_000, 10.0, reference=True),
               _row("a", 1_000, 30.0, [18.0, 22.0]), _row("b", 2_000, 20.0, [8.0, 12.0]))
    best = best_model(t)
    assert best["model"] == "b" and not best["within"] and "no compressed model" in best["reason"]
    assert best_model(_table(_row("teacher", 1, 10.0, reference=True))) is None


def test_explorer_links_open_the_run_s_pages_preset():
    t = _table(_row("teacher", 6_000_000, 10.0, reference=True),
               _row("l0", 3_000_000, 10.5, [-0.5, 1.5]), masks=[("r0", "l0")])
    t["best"] = best_model(t)
    urls = explorer_urls("http://h:1/", t)
    q = {k: parse_qs(urlsplit(u).query) for k, u in urls.items()}
    assert urlsplit(urls["compare"]).path == "/compare"
    assert q["compare"] == {"split": ["test-clean"], "a": ["r/teacher/1"], "b": ["r/l0/1"]}
    assert q["listen"]["models"] == ["r/teacher/1", "r/l0/1"]
    assert q["masks"] == {"run": ["r0"], "stage": ["l0"]}
    assert q["pareto"] == {"split": ["test-clean"], "runs": ["r"]}


def test_a_reused_run_s_pareto_link_names_the_runs_that_computed_its_models():
    t = _table(_row("teacher", 6_000_000, 10.0, reference=True),
               _row("l0", 3_000_000, 10.5, [-0.5, 1.5]))
    t["run_id"] = "r2"  # a second run that reused every stage of run "r" and "r1"
    t["rows"][1]["keys"] = {"test-clean": "r1/l0/1"}
    assert source_runs(t) == ["r", "r1"]
    q = parse_qs(urlsplit(explorer_urls("http://h:1", t)["pareto"]).query)
    assert q["runs"] == ["r", "r1"]
    assert source_runs({"run_id": "r3", "rows": []}) == ["r3"]
