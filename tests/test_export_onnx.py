"""The sherpa-onnx export runs in sherpa-onnx itself and decodes as the lab does.

The equivalence tests use a seeded, untrained tiny model on purpose: it emits a token at nearly
every frame, so every decoder and joiner call counts; a 60-step tiny model emits nothing yet,
which would make any comparison pass. The trained tiny twin (tests/compress/test_shared_stage.py)
covers the stages end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import save_model
from engine.compress.share import shared_encoder
from engine.data.features import fbank, train_cmvn
from engine.decode import greedy_search
from engine.export import LSTMNotExportable, export_sherpa_onnx
from engine.models.build import build, preset
from engine.runtimes import OrtTransducer, SherpaTransducer, evaluate_exported
from engine.stages import evaluate_model, split_features

ROOT = Path(__file__).resolve().parents[1]


def _save(model, tok, path: Path) -> Path:
    save_model(model, path, {"tokenizer": torch.frombuffer(bytearray(tok.proto()),
                                                           dtype=torch.uint8)})
    return path


def _model(tok, tiny, predictor="stateless", layers=None, share=None):
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=tok.vocab_size, predictor=predictor)
    if layers:
        cfg = replace(cfg, encoder=replace(cfg.encoder, blocks=(cfg.encoder.blocks[0],) * layers))
    if share:
        cfg = replace(cfg, encoder=shared_encoder(cfg.encoder, "repeat", share))
    return build(cfg, train_cmvn(tiny)).for_inference().eval()


@pytest.fixture(scope="module")
def exported(tiny, tiny_tok, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    model = _model(tiny_tok, tiny)
    path = _save(model, tiny_tok, tmp / "model.pt")
    info = export_sherpa_onnx(path, tmp / "sherpa", int8=True)
    return model, tmp / "sherpa", info


def test_the_folder_holds_what_sherpa_onnx_loads(exported, tiny_tok):
    import onnx

    _, folder, info = exported
    for f in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "encoder.int8.onnx",
              "decoder.int8.onnx", "joiner.int8.onnx", "tokens.txt", "asrlab.json"):
        assert (folder / f).exists(), f
    meta = {p.key: p.value for p in onnx.load(str(folder / "decoder.onnx")).metadata_props}
    assert meta["context_size"] == "2" and meta["vocab_size"] == str(tiny_tok.vocab_size)
    assert len((folder / "tokens.txt").read_text().splitlines()) == tiny_tok.vocab_size
    assert info["verify_max_abs_diff"] < 1e-3
    assert info["bytes"] == sum((folder / f"{n}.onnx").stat().st_size
                                for n in ("encoder", "decoder", "joiner"))
    assert info["int8_bytes"] < 0.6 * info["bytes"], info


def test_sherpa_onnx_decodes_token_for_token_as_the_lab(exported, tiny):
    """sherpa-onnx (its own fbank on the raw audio, its greedy search over the repeated encoder
    frames) against the lab's greedy search (up to 3 tokens a frame) on the lab's fbank of the
    same audio; and onnxruntime on the lab's features."""
    model, folder, info = exported
    files = {n: folder / f"{n}.onnx" for n in ("encoder", "decoder", "joiner")}
    sherpa = SherpaTransducer(files, folder / "tokens.txt")
    ort = OrtTransducer(files)
    cuts = list(split_features(tiny, "test-clean"))[:12]
    same_sherpa = same_ort = emitted = 0
    for c in cuts:
        samples = c.load_audio()[0].astype(np.float32)
        feats = fbank(samples)
        with torch.no_grad():
            enc, lens = model.encode(feats[None], torch.tensor([feats.shape[0]]))
            lab = greedy_search(model, enc, lens)[0]
        emitted += len(lab)
        same_sherpa += sherpa.recognize(samples)[1] == lab
        same_ort += ort.recognize(feats.numpy()) == lab
    assert emitted > 10 * len(cuts)  # a real comparison: many tokens per utterance
    assert same_ort == len(cuts)
    assert same_sherpa >= len(cuts) - 1, (same_sherpa, len(cuts))  # fbank float noise at most


def test_exported_wer_is_the_labs_and_keys_match(exported, tiny, tiny_tok):
    model, folder, _ = exported
    lab_res = evaluate_model(model, tiny_tok, tiny, "test-clean", "greedy", max_utterances=12,
                             accounting_utterances=2)
    lab = lab_res["summary"]
    fp32 = evaluate_exported(folder, tiny, "test-clean", "sherpa-onnx", max_utterances=12,
                             accounting_utterances=2, repeats=1)["summary"]
    int8 = evaluate_exported(folder, tiny, "test-clean", "sherpa-onnx", int8=True,
                             max_utterances=12, accounting_utterances=2, repeats=1)["summary"]
    assert set(lab) <= set(fp32)  # the same keys as a checkpoint's evaluation, and more
    assert fp32["runtime"] == "sherpa-onnx" and int8["runtime"] == "sherpa-onnx-int8"
    assert int8["bytes"] < 0.6 * fp32["bytes"]
    assert fp32["params"] == lab["params"]
    assert abs(fp32["wer"] - lab["wer"]) <= 1.0, (fp32["wer"], lab["wer"])
    assert fp32["macs_per_second"] == pytest.approx(lab["macs_per_second"], rel=0.35)
    # size and speed measured on the same utterances by every runtime: the longest ones
    assert lab["accounting_cuts"] == fp32["accounting_cuts"] == int8["accounting_cuts"]
    dur = {c.id: c.duration for c in split_features(tiny, "test-clean")}
    scored = sorted((u["cut_id"] for u in lab_res["utterances"]), key=lambda c: (-dur[c], c))
    assert lab["accounting_cuts"] == scored[:2]


def test_shared_blocks_are_stored_once_in_onnx(tiny, tiny_tok, tmp_path):
    full = _save(_model(tiny_tok, tiny, layers=6), tiny_tok, tmp_path / "full.pt")
    shared = _save(_model(tiny_tok, tiny, layers=6, share=2), tiny_tok, tmp_path / "shared.pt")
    a = export_sherpa_onnx(full, tmp_path / "a", int8=True)
    b = export_sherpa_onnx(shared, tmp_path / "b", int8=True)
    assert b["params"] < 0.6 * a["params"]
    # bytes follow the unique parameters, in fp32 and in int8 (no fp32 copy beside the int8)
    assert b["bytes"] < 0.7 * a["bytes"] and b["int8_bytes"] < 0.7 * a["int8_bytes"]
    assert b["bytes"] < 4 * b["params"] * 1.3


def test_an_lstm_predictor_is_refused_with_the_reason(tiny, tiny_tok, tmp_path):
    path = _save(_model(tiny_tok, tiny, predictor="lstm"), tiny_tok, tmp_path / "lstm.pt")
    with pytest.raises(LSTMNotExportable, match="stateless"):
        export_sherpa_onnx(path, tmp_path / "out")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(path), "--format",
                        "sherpa-onnx", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "LSTM predictor" in r.stderr and "stateless" in r.stderr


def test_cli_export_and_evaluate_in_sherpa_onnx(tiny, tiny_tok, tmp_path):
    path = _save(_model(tiny_tok, tiny), tiny_tok, tmp_path / "model.pt")

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                           text=True, cwd=ROOT)
        return r

    r = cli("export", str(path), "--format", "sherpa-onnx", "--out", str(tmp_path / "d"),
            "--int8", "--keep-fp32", "joiner", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["fp32_modules"] == ["joiner"]
    r = cli("evaluate", str(tmp_path / "d"), "--runtime", "sherpa-onnx", "--int8", "--data",
            str(tiny), "--max-utterances", "4", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["bytes"] == info["int8_bytes"] and s["runtime"] == "sherpa-onnx-int8"
    assert {"wer", "wer_ci", "params", "bytes", "macs_per_second", "rtf"} <= set(s)
    # bad input: what is wrong, and where
    r = cli("evaluate", str(path), "--runtime", "sherpa-onnx", "--data", str(tiny))
    assert r.returncode == 2 and "takes an exported folder" in r.stderr
    r = cli("evaluate", str(tmp_path), "--runtime", "sherpa-onnx", "--data", str(tiny))
    assert r.returncode == 2 and "no asrlab.json" in r.stderr
    r = cli("export", str(path), "--format", "sherpa-onnx", "--out", str(tmp_path / "e"),
            "--int8", "--keep-fp32", "lstm")
    assert r.returncode == 2 and "unknown module types" in r.stderr
    (tmp_path / "d" / "joiner.onnx").write_bytes(b"not onnx")
    r = cli("evaluate", str(tmp_path / "d"), "--runtime", "onnxruntime", "--data", str(tiny))
    assert r.returncode == 2 and "joiner.onnx: onnxruntime cannot load it" in r.stderr
    (tmp_path / "d" / "decoder.int8.onnx").unlink()
    r = cli("evaluate", str(tmp_path / "d"), "--runtime", "sherpa-onnx", "--int8", "--data",
            str(tiny))
    assert r.returncode == 2 and "decoder.int8.onnx: missing" in r.stderr
