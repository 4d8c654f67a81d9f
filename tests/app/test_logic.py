"""The explorer's pure parts: the front, chart selection -> model ids, word diffs, WAV bytes at
their real level, the TOML the Launch page previews."""

from __future__ import annotations

import io
import tomllib

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from app import audio, charts, pareto, text
from engine.config import load_experiment, parse_experiment, to_toml

from .conftest import ROOT


def brute_front(x, y):
    n = len(x)
    return np.array([not any((x[j] <= x[i] and y[j] <= y[i]) and (x[j] < x[i] or y[j] < y[i])
                             for j in range(n)) for i in range(n)])


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 30, 200).astype(float)  # ties in x and y on purpose
    y = rng.integers(1, 30, 200).astype(float)
    assert (pareto.front_mask(x, y) == brute_front(x, y)).all()


def test_front_ignores_missing_values():
    m = pareto.front_mask(np.array([1.0, np.nan, 3.0]), np.array([5.0, 1.0, 4.0]))
    assert m.tolist() == [True, False, True]


def test_selection_maps_points_through_customdata():
    models = pd.DataFrame({"model": ["r1/eval/30", "r2/eval/30", "r3/model/10"],
                           "run_id": ["r1", "r2", "r3"], "run_name": ["a", "b", "c"],
                           "model_stage": ["model"] * 3, "step": [30, 30, 10],
                           "method": ["train", "prune", "train"], "wer": [20.0, 30.0, 25.0],
                           "wer_lo": [18.0, 28.0, 22.0], "wer_hi": [22.0, 32.0, 28.0],
                           "bytes": [100, 50, 200]})
    fig = charts.pareto(pareto.with_front(models, "bytes"), "bytes", "test-clean")
    # a click on the second point of the 'train' trace is model r3 whatever the trace order
    train = next(t for t in fig.data if t.name == "train")
    event = {"selection": {"points": [
        {"curve_number": 0, "point_index": 1, "customdata": list(train.customdata[1])},
        {"curve_number": 1, "point_index": 0, "customdata": ["r2/eval/30", "b", "model", "30"]},
        {"curve_number": 1, "point_index": 0, "customdata": ["r2/eval/30", "b", "model", "30"]},
    ]}}
    assert pareto.selected_models(event) == ["r3/model/10", "r2/eval/30"]
    assert pareto.selected_models({"selection": {"points": []}}) == []
    assert pareto.selected_models(None) == []


def test_word_diff_marks_each_kind_of_error():
    ops = text.word_diff("the cat sat on the mat", "the bat sat the mat today")
    assert ops == [("equal", "the", "the"), ("substitute", "cat", "bat"),
                   ("equal", "sat", "sat"), ("delete", "on", ""), ("equal", "the mat", "the mat"),
                   ("insert", "", "today")]
    html = text.diff_html("a <b>", "a &")
    assert "&lt;b&gt;" in html and "&amp;" in html  # text is escaped
    assert "(empty)" in text.diff_html("", "")
    assert text.word_diff("one two", "") == [("delete", "one two", "")]


def test_wav_bytes_keep_the_real_level(tmp_path):
    sr = 16000
    quiet = 0.05 * np.sin(2 * np.pi * 220 * np.arange(sr * 2) / sr)
    path = tmp_path / "quiet.wav"
    sf.write(path, quiet, sr, subtype="PCM_16")
    wav = audio.wav_bytes(path, start=0.5, duration=1.0)
    got, got_sr = sf.read(io.BytesIO(wav))
    assert got_sr == sr and len(got) == sr
    assert abs(np.abs(got).max() - 0.05) < 1e-3  # not peak-normalised to 1.0
    with pytest.raises(audio.AudioMissing, match="missing.wav"):
        audio.wav_bytes(tmp_path / "missing.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really")
    with pytest.raises(audio.AudioMissing, match="corrupt.wav"):
        audio.wav_bytes(tmp_path / "corrupt.wav")


@pytest.mark.parametrize("name", ["tiny", "demo", "teacher"])
def test_to_toml_round_trips_every_experiment(name):
    exp = load_experiment(ROOT / "experiments" / f"{name}.toml")
    assert parse_experiment(tomllib.loads(to_toml(exp.model_dump(mode="json")))) == exp


def test_zeroed_losses_are_summed_over_a_stage_s_windows():
    from app.data import zeroed_losses

    curve = pd.DataFrame({"step": [10, 20, 30], "zeroed_losses": [0, 3, 1],
                          "utterances": [100, 100, 200]})
    z = zeroed_losses(curve)
    assert z == {"zeroed": 4, "utterances": 400, "share": 0.01, "worst_step": 20}
    assert zeroed_losses(curve.assign(zeroed_losses=0)) is None
    assert zeroed_losses(pd.DataFrame({"step": [1], "loss": [2.0]})) is None  # older stages
