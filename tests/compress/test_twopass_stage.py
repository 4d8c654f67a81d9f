"""experiments/tiny_twopass.toml end to end on the session's tiny corpus: the three stages of
two-pass compression, and evaluations that report both passes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from engine.checkpoint import load_model

from .test_prune_stage import run_twin


@pytest.fixture(scope="module")
def twopass(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_twopass")
    return out, run_twin("tiny_twopass", tiny, out)


def test_the_three_stages_make_a_smaller_two_pass_student(twopass):
    out, o = twopass
    teacher, tmeta = load_model(o["teacher-las"]["model"])
    s1, _ = load_model(o["s1-rnnt-kd"]["model"])
    s2, s2meta = load_model(o["s2-las-kd"]["model"])
    s3, s3meta = load_model(o["s3-deep"]["model"])
    assert teacher.las is not None and s1.las is None and s2.las is not None
    las_params = lambda m: sum(p.numel() for p in m.las.parameters())  # noqa: E731
    assert las_params(s2) < las_params(teacher)
    # stage 2 trains only the LAS: the student's encoder, predictor and joiner are stage 1's
    for k, v in s1.state_dict().items():
        assert torch.equal(v, s2.state_dict()[k]), k
    # stage 3 trains every part
    assert any(not torch.equal(v, s3.state_dict()[k]) for k, v in s2.state_dict().items()
               if k.startswith("encoder."))
    for meta in (tmeta, s2meta, s3meta):
        assert 0.0 <= meta["twopass"]["lambda"] <= 1.0 and meta["twopass"]["nbest"] == 4
    # one file holds the whole two-pass model, the shared encoder once
    b1, b2 = o["export-s1"]["bytes"], o["export-s2"]["bytes"]
    assert b1 < b2 < b1 + 4 * las_params(s2) + 20_000


def test_evaluations_report_both_passes(twopass):
    out, o = twopass
    for stage in ("eval-teacher-las", "eval-s2", "eval-s3"):
        r = json.loads((out / stage / "results_test-clean.json").read_text())
        assert r["decoding"] == "twopass" and r["nbest"] == 4
        assert {"wer", "wer_first_pass", "rescore_rtf", "las_lambda"} <= set(r)
        rows = [json.loads(l) for l in (out / stage / "hyps_test-clean.jsonl").read_text().splitlines()]
        nb = rows[0]["nbest"]
        assert len(nb["list"]) >= 1 and 0 <= nb["chosen"] < len(nb["list"])
        assert rows[0]["hypothesis"] == nb["list"][nb["chosen"]]["text"]
    r = json.loads((out / "eval-s1" / "results_test-clean.json").read_text())
    assert "wer_first_pass" not in r  # a plain RNN-T has one pass


def test_evaluate_json_on_a_two_pass_model(twopass, tiny):
    out, o = twopass
    p = subprocess.run([sys.executable, "-m", "engine.cli", "evaluate", o["export-s3"]["artifact"],
                        "--data", str(tiny), "--max-utterances", "6", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert {"wer", "wer_ci", "bytes", "params", "wer_first_pass", "nbest"} <= set(s)
    assert s["nbest"] == 4 and s["utterances"] == 6
    assert s["las_lambda"] == load_model(o["s3-deep"]["model"])[1]["twopass"]["lambda"]
