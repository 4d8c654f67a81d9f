"""The compression table's text: each paired difference says whether it is significant."""

from engine.report import format_table, pareto_url


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
