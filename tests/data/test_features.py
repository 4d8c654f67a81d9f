import numpy as np
import pytest
import torch

from engine.data.corpus import load_cuts
from engine.data.features import (FbankSettings, GlobalCMVN, compute_cmvn,
                                  compute_features, fbank, features_dir, num_frames, SpecAugment,
                                  train_cmvn)


def test_fbank_matches_lhotse_kaldi_compatible_fbank(tiny):
    """Two independent implementations of Kaldi's fbank agree (lhotse's is the icefall frontend)."""
    from lhotse import Fbank, FbankConfig

    cut = load_cuts(tiny, "dev")[0]
    audio = cut.load_audio()[0]
    ours = fbank(audio).numpy()
    theirs = Fbank(FbankConfig(num_filters=80, dither=0.0, snip_edges=False, low_freq=20.0,
                               high_freq=-400.0)).extract(audio, 16000)
    assert ours.shape == theirs.shape == (num_frames(len(audio)), 80)
    assert np.median(np.abs(ours - theirs)) < 1e-2, np.median(np.abs(ours - theirs))


def test_frame_count_snip_edges_false():
    for n in (400, 1600, 16000, 16079, 16080, 16081):
        assert fbank(np.zeros(n, dtype=np.float32) + 0.01).shape[0] == num_frames(n)
    with pytest.raises(ValueError, match="shorter than one 25 ms frame"):
        fbank(np.zeros(160, dtype=np.float32))


def test_cache_is_reused_and_keyed_by_settings(tiny):
    a = compute_features(tiny, "dev")
    d = features_dir(tiny, "dev")
    stamp = (d / "cuts.jsonl.gz").stat().st_mtime_ns
    b = compute_features(tiny, "dev")
    assert (d / "cuts.jsonl.gz").stat().st_mtime_ns == stamp
    assert [c.id for c in a] == [c.id for c in b]
    other = FbankSettings(num_mel_bins=40)
    assert features_dir(tiny, "dev", other) != d
    c = compute_features(tiny, "dev", other)
    assert c[0].load_features().shape[1] == 40


def test_cached_features_equal_on_the_fly_within_lilcom_precision(tiny):
    cuts = compute_features(tiny, "dev")
    for cut in list(cuts)[:5]:
        cached = cut.load_features()
        fresh = fbank(cut.load_audio()[0]).numpy()
        assert cached.shape == fresh.shape
        assert np.abs(cached - fresh).max() < 0.05 * (fresh.max() - fresh.min())


def test_cmvn_statistics_and_module(tiny):
    stats = train_cmvn(tiny)
    cuts = compute_features(tiny, "train")
    allf = np.concatenate([c.load_features() for c in cuts])
    assert stats["frames"] == allf.shape[0]
    np.testing.assert_allclose(stats["mean"], allf.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["std"], allf.std(0), rtol=1e-3, atol=1e-3)
    cmvn = GlobalCMVN.from_stats(stats)
    y = cmvn(torch.from_numpy(allf).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(y.std(0), 1, atol=1e-2)
    assert set(dict(cmvn.named_buffers())) == {"mean", "inv_std"} and not list(cmvn.parameters())
    with pytest.raises(ValueError):
        compute_cmvn([])


def test_spec_augment_masks_only_within_lengths():
    torch.manual_seed(0)
    x = torch.randn(3, 400, 80) + 5
    aug = SpecAugment()(x, torch.tensor([400, 300, 200]))
    assert aug.shape == x.shape
    assert not torch.equal(aug, x)
    assert torch.equal(aug[2, 200:], x[2, 200:])  # padding untouched
