import numpy as np
import pytest
import torch

from engine.data.batching import LoaderSettings, TransducerDataset, make_loader
from engine.data.features import compute_features, SpecAugment
from engine.data.noise import NoiseAugment


def test_one_epoch_covers_every_cut_once_within_max_duration(tiny, tiny_tok):
    cuts = compute_features(tiny, "train")
    loader = make_loader(cuts, TransducerDataset(tiny_tok),
                         LoaderSettings(max_duration=20.0, num_workers=2))
    seen = []
    durations = {c.id: c.duration for c in cuts}
    for batch in loader:
        x, lens = batch["features"], batch["feature_lens"]
        assert x.ndim == 3 and x.shape[2] == 80 and x.dtype == torch.float32
        assert int(lens.max()) == x.shape[1]
        assert sum(durations[i] for i in batch["cut_ids"]) <= 20.0 + 1e-6
        for i, n in enumerate(lens.tolist()):
            assert torch.all(x[i, n:] == 0)
        toks, tl = batch["tokens"], batch["token_lens"]
        for i, text in enumerate(batch["texts"]):
            assert tiny_tok.decode(toks[i, : tl[i]].tolist()) == text
        seen += batch["cut_ids"]
    assert sorted(seen) == sorted(durations)


def test_cached_and_on_the_fly_batches_agree(tiny, tiny_tok):
    cuts = compute_features(tiny, "dev").subset(first=4)
    cached = TransducerDataset(tiny_tok)[cuts]
    fresh = TransducerDataset(tiny_tok, on_the_fly=True)[cuts]
    assert cached["cut_ids"] == fresh["cut_ids"]
    assert torch.equal(cached["feature_lens"], fresh["feature_lens"])
    assert (cached["features"] - fresh["features"]).abs().max() < 1.0


def test_noise_augmentation_and_spec_augment_change_features(tiny, tiny_tok):
    cuts = compute_features(tiny, "dev").subset(first=4)
    clean = TransducerDataset(tiny_tok)[cuts]["features"]
    noisy = TransducerDataset(tiny_tok, noise=NoiseAugment(p=1.0, seed=0))[cuts]["features"]
    masked = TransducerDataset(tiny_tok, spec_augment=SpecAugment())[cuts]["features"]
    assert clean.shape == noisy.shape == masked.shape
    assert (clean - noisy).abs().mean() > 0.1
    assert not torch.equal(clean, masked)


def test_noise_augment_sources_differ_from_test_other():
    from engine.data.noise import SOURCES

    assert SOURCES["train"].snr_db != SOURCES["eval"].snr_db
    assert SOURCES["train"].hum_hz != SOURCES["eval"].hum_hz
    aug = NoiseAugment(p=1.0, seed=1)
    x = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * 0.1
    y = aug.corrupt(x)
    assert y.shape == x.shape and np.abs(y).max() <= 1.0 and not np.allclose(x, y)


def test_speed_perturbation_on_features_matches_speed_changed_audio(tiny):
    """The feature-domain speed change lands much closer to the fbank of really resampled audio
    than the unperturbed features do (frames and mel bins both move)."""
    from engine.data.features import SpeedPerturb, fbank
    from engine.data.noise import change_speed

    cut = next(iter(compute_features(tiny, "dev")))
    audio = cut.load_audio()[0]
    base = fbank(audio)
    sp = SpeedPerturb(p=1.0)
    for factor in (0.9, 1.1):
        real = fbank(change_speed(audio, factor))
        warped = sp(base, factor)
        assert abs(warped.shape[0] - real.shape[0]) <= 1, (warped.shape, real.shape)
        n = min(warped.shape[0], real.shape[0])
        # the unperturbed features, stretched in time only, as the baseline to beat
        stretched = base[torch.clamp((torch.arange(n) * factor).round().long(),
                                     max=base.shape[0] - 1)]
        err = (warped[:n] - real[:n]).abs().mean()
        err_time_only = (stretched - real[:n]).abs().mean()
        assert err < 0.8 * err_time_only, (factor, float(err), float(err_time_only))


def test_speed_perturbation_changes_lengths_and_keeps_tokens(tiny, tiny_tok):
    from engine.data.features import SpeedPerturb

    cuts = compute_features(tiny, "dev").subset(first=6)
    clean = TransducerDataset(tiny_tok)[cuts]
    fast = TransducerDataset(tiny_tok, speed=SpeedPerturb(p=1.0, factors=(1.2, 1.2)))[cuts]
    assert clean["cut_ids"] == fast["cut_ids"]
    assert torch.equal(clean["tokens"], fast["tokens"])
    expected = torch.round(clean["feature_lens"].double() / 1.2).long()
    assert torch.equal(fast["feature_lens"], expected)
    with pytest.raises(ValueError, match="speed factors"):
        SpeedPerturb(factors=(1.1, 0.9))
