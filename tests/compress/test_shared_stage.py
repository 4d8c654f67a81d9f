"""experiments/tiny_shared.toml end to end: a shared student distilled, pruned, exported to
sherpa-onnx fp32 and int8 (after the sensitivity sweep) and scored in sherpa-onnx itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import load_experiment, parse_experiment
from engine.stages import run_experiment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_run(tiny, tmp_path_factory):
    exp = load_experiment(ROOT / "experiments" / "tiny_shared.toml").model_dump()
    exp["data"]["corpus"] = str(tiny)
    out = tmp_path_factory.mktemp("tiny_shared")
    return out, run_experiment(parse_experiment(exp), out, progress=False, log=lambda s: None)


def test_the_shared_student_is_smaller_and_exports(shared_run):
    out, o = shared_run
    sens = json.loads((Path(o["onnx-share2"]["onnx_dir"]) / "asrlab.json").read_text())
    assert sens["config"]["encoder"]["share"] == [0, 0, 0, 1, 1, 1]
    # the sweep scored every module type with a MatMul, and the export honoured its choice
    types = set(sens["sensitivity"]["types"])
    assert {"feed_forward", "attention", "convolution", "joiner", "decoder"} <= types
    assert sens["fp32_modules"] == sorted(sens["sensitivity"]["keep_fp32"])
    teacher = o["eval-share2"]["results"]["test-clean"]
    assert o["onnx-share2"]["int8_bytes"] < 0.6 * o["onnx-share2"]["bytes"]
    assert teacher["params"] == o["onnx-share2"]["params"]


def test_sherpa_onnx_scores_as_the_lab_does(shared_run):
    _, o = shared_run
    lab = o["eval-share2"]["results"]["test-clean"]
    fp32 = o["eval-share2-sherpa"]["results"]["test-clean"]
    int8 = o["eval-share2-sherpa-int8"]["results"]["test-clean"]
    assert lab["utterances"] == fp32["utterances"] == int8["utterances"] == 12
    assert abs(fp32["wer"] - lab["wer"]) <= 1.0, (fp32["wer"], lab["wer"])
    assert fp32["runtime"] == "sherpa-onnx" and int8["runtime"] == "sherpa-onnx-int8"
    assert int8["bytes"] == o["onnx-share2"]["int8_bytes"] < fp32["bytes"]
    assert int8["rtf"] > 0 and fp32["macs_per_second"] > 0


def test_sparsity_saves_no_onnx_bytes(shared_run):
    """ONNX stores weights dense: the 50% sparse model's files are as large as the dense one's
    (its sparse model.pt is what is smaller); said, not hidden."""
    _, o = shared_run
    dense, sparse = o["onnx-share2"], o["onnx-share2-sparse"]
    assert sparse["nonzero_params"] < 0.6 * sparse["params"]
    assert abs(sparse["bytes"] - dense["bytes"]) < 0.01 * dense["bytes"]
