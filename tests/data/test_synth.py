import json

import numpy as np
import pytest
import soundfile as sf

from engine.data.corpus import SPLITS, corpus_info, load_cuts
from engine.data.synth import make_plan, synthesize


def test_plan_is_deterministic_and_splits_are_disjoint():
    a, b, c = make_plan("demo", 0), make_plan("demo", 0), make_plan("demo", 1)
    assert a == b
    assert [u.text for u in a] != [u.text for u in c]
    assert len(a) == 3000
    texts = {s: {u.text for u in a if u.split == s} for s in SPLITS}
    for s in SPLITS[1:]:
        assert not texts[s] & texts["train"], s
    seen = {u.voice.id for u in a if u.split == "train"}
    other = {u.voice.id for u in a if u.split == "test-other"}
    assert other and not other & seen
    # unseen voices differ in timbre (variant), not only in pitch
    assert not {v.split("-p")[0].rsplit("-", 1)[-1] for v in other if v.startswith("espeak")} & \
        {v.split("-p")[0].rsplit("-", 1)[-1] for v in seen if v.startswith("espeak")}
    assert {u.voice.engine for u in a} == {"espeak", "flite"}
    assert all(u.corruption is not None for u in a if u.split == "test-other")
    assert all(u.corruption is None for u in a if u.split != "test-other")
    assert all(5 <= u.corruption.snr_db <= 20 for u in a if u.split == "test-other")


def test_tiny_corpus_audio_and_manifests(tiny):
    meta = json.loads((tiny / "corpus.json").read_text())
    assert meta["complete"] and meta["size"] == "tiny"
    for split in SPLITS:
        cuts = load_cuts(tiny, split)
        assert len(cuts) > 0
        cut = cuts[0]
        audio = cut.load_audio()
        assert audio.shape[0] == 1 and cut.sampling_rate == 16000
        assert abs(audio.shape[1] / 16000 - cut.duration) < 1e-3
        assert 0.01 < np.abs(audio).max() <= 1.0
        assert cut.supervisions[0].text.strip()
    info = sf.info(str(tiny / "audio" / "train" / "train-000000.flac"))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")


def test_corpus_info_proves_the_splits(tiny):
    info = corpus_info(tiny)["splits"]
    assert set(info) == set(SPLITS)
    for split in ("dev", "test-clean", "test-other"):
        assert info[split]["sentence_overlap_with_train"] == 0
    assert info["test-other"]["voice_overlap_with_train"] == 0
    assert info["test-clean"]["voice_overlap_with_train"] == info["test-clean"]["voices"] > 0
    assert info["train"]["hours"] > 0 and info["train"]["words"] > 500
    assert info["test-other"]["noisy_utterances"] == info["test-other"]["utterances"]


def test_test_other_is_noisier_than_test_clean(tiny):
    def noise_floor(split):
        floors = []
        for cut in list(load_cuts(tiny, split))[:10]:
            x = cut.load_audio()[0]
            frames = x[: len(x) // 400 * 400].reshape(-1, 400)
            energy = (frames ** 2).mean(1)
            floors.append(10 * np.log10(np.percentile(energy, 10) / energy.max() + 1e-12))
        return np.median(floors)

    assert noise_floor("test-other") > noise_floor("test-clean") + 15


def test_rerun_resumes_and_refuses_other_settings(tiny, tmp_path):
    out = tmp_path / "c"
    out.symlink_to(tiny)
    victim = tiny / "audio" / "dev" / "dev-000003.flac"
    keep = tiny / "audio" / "dev" / "dev-000004.flac"
    before = keep.stat().st_mtime_ns
    original = victim.read_bytes()
    victim.unlink()
    synthesize(out, size="tiny", seed=0, progress=False)
    assert victim.read_bytes() == original  # deterministic re-render
    assert keep.stat().st_mtime_ns == before  # finished files are skipped
    with pytest.raises(FileExistsError, match="seed"):
        synthesize(out, size="tiny", seed=1, progress=False)


def test_interrupted_corpus_is_reported_incomplete(tmp_path):
    from engine.data.corpus import CorpusError, check_corpus

    (tmp_path / "corpus.json").write_text(json.dumps({"kind": "synth", "complete": False}))
    with pytest.raises(CorpusError, match="incomplete"):
        check_corpus(tmp_path)
