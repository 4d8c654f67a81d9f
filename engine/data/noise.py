"""Noise, reverberation and speed change, for test-other and for training augmentation.

Two disjoint *sources* of the same kinds of noise exist so that a model trained with augmentation
never hears test-other's exact noise:

- ``eval``: test-other's corruption. White, pink and brown noise, 50 Hz mains hum with harmonics,
  and speech-shaped babble-like noise (pink noise under a 3-5 Hz syllabic envelope); SNR 5 to 20 dB;
  half the utterances also get mild reverberation (RT60 0.15-0.4 s) or a 0.9-1.1x speed change.
- ``train``: the same kinds from other generators (a continuous spectral tilt instead of the three
  fixed colours, 60 Hz hum, other envelope rates, other room sizes) at other levels (SNR 10-30 dB).

Everything is numpy, float32 in [-1, 1], 16 kHz, deterministic in the ``numpy.random.Generator``
the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")


@dataclass(frozen=True)
class NoiseSource:
    name: str
    snr_db: tuple[float, float]
    tilt: tuple[float, float] | None  # continuous 1/f^tilt exponent; None = the three colours
    hum_hz: float
    envelope_hz: tuple[float, float]
    rt60_s: tuple[float, float]


SOURCES = {
    "eval": NoiseSource("eval", snr_db=(5.0, 20.0), tilt=None, hum_hz=50.0,
                        envelope_hz=(3.0, 5.0), rt60_s=(0.15, 0.4)),
    "train": NoiseSource("train", snr_db=(10.0, 30.0), tilt=(0.3, 1.7), hum_hz=60.0,
                         envelope_hz=(2.0, 3.0), rt60_s=(0.1, 0.3)),
}


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1] if n > 1 else 1.0
    spec *= f ** (-exponent / 2.0)
    out = np.fft.irfft(spec, n)
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def make_noise(kind: str, n: int, source: NoiseSource, rng: np.random.Generator) -> np.ndarray:
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    if kind in ("white", "pink", "brown"):
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        if source.tilt is not None:
            exponent = rng.uniform(*source.tilt)
        return colored_noise(n, exponent, rng)
    t = np.arange(n) / SAMPLE_RATE
    if kind == "hum":
        phase = rng.uniform(0, 2 * np.pi, size=4)
        amps = np.array([1.0, 0.5, 0.3, 0.15]) * rng.uniform(0.7, 1.3, size=4)
        hum = sum(a * np.sin(2 * np.pi * source.hum_hz * (k + 1) * t + p)
                  for k, (a, p) in enumerate(zip(amps, phase)))
        hum += 0.05 * colored_noise(n, 1.0, rng)
        return (hum / (np.std(hum) + 1e-12)).astype(np.float32)
    # babble-like: speech-shaped noise with a syllabic envelope from several "talkers"
    out = np.zeros(n)
    for _ in range(rng.integers(3, 6)):
        rate = rng.uniform(*source.envelope_hz)
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
        out += env ** 2 * colored_noise(n, 1.2, rng)
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that 10 log10(P_speech / P_noise) = snr_db."""
    assert speech.shape == noise.shape, (speech.shape, noise.shape)
    p_speech = float(np.mean(speech.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    scale = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10.0)))
    return (speech + scale * noise).astype(np.float32)


def room_impulse_response(rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise tail with a direct path: a simple diffuse-field RIR."""
    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)  # -60 dB at rt60
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # early reflections start after ~2 ms
    rir = 0.35 * tail / (np.sqrt(np.sum(tail ** 2)) + 1e-12)
    rir[0] = 1.0
    return rir.astype(np.float32)


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution via FFT, truncated to len(x) (np.convolve is O(N M): 40x slower here)."""
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def reverberate(x: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    rir = room_impulse_response(rt60_s, rng)
    y = fft_convolve(x, rir)
    return (y * (np.max(np.abs(x)) / (np.max(np.abs(y)) + 1e-12))).astype(np.float32)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Speed change by resampling (pitch moves with it, as in Kaldi's speed perturbation)."""
    n_out = int(round(len(x) / factor))
    return np.interp(np.linspace(0, len(x) - 1, n_out), np.arange(len(x)), x).astype(np.float32)


def normalize_peak(x: np.ndarray, peak: float = 0.98) -> np.ndarray:
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x if m <= peak else (x * (peak / m)).astype(np.float32)


@dataclass(frozen=True)
class Corruption:
    """One utterance's corruption, recorded in the manifest so every test-other file is explained."""

    noise: str
    snr_db: float
    effect: str  # "none", "reverb" or "speed"
    amount: float  # rt60 seconds or speed factor

    def apply(self, x: np.ndarray, source: NoiseSource, rng: np.random.Generator) -> np.ndarray:
        if self.effect == "reverb":
            x = reverberate(x, self.amount, rng)
        elif self.effect == "speed":
            x = change_speed(x, self.amount)
        x = mix_at_snr(x, make_noise(self.noise, len(x), source, rng), self.snr_db)
        return normalize_peak(x)


def sample_corruption(source: NoiseSource, rng: np.random.Generator) -> Corruption:
    noise = str(rng.choice(NOISE_KINDS))
    snr = round(float(rng.uniform(*source.snr_db)), 1)
    r = rng.random()
    if r < 0.25:
        return Corruption(noise, snr, "reverb", round(float(rng.uniform(*source.rt60_s)), 2))
    if r < 0.5:
        return Corruption(noise, snr, "speed", round(float(rng.choice([0.9, 0.95, 1.05, 1.1])), 2))
    return Corruption(noise, snr, "none", 0.0)


class NoiseAugment:
    """Training-time augmentation from the ``train`` source: noise at 10-30 dB SNR, and a quarter
    of the corrupted utterances also reverberated.

    Noise comes from a bank of clips generated once per worker (``bank_seconds`` of each kind,
    ``bank_clips`` clips), cropped at random offsets, as MUSAN-style augmentation does: generating
    fresh noise per utterance costs more than computing its features. Speed change is left out
    because it would change the duration the sampler planned for.
    """

    def __init__(self, p: float = 0.5, source: str = "train", seed: int | None = None,
                 bank_clips: int = 3, bank_seconds: float = 20.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"noise augmentation probability must be in [0, 1], got {p}")
        self.p = p
        self.source = SOURCES[source]
        self.rng = np.random.default_rng(seed)
        self.bank_clips = bank_clips
        self.bank_seconds = bank_seconds
        self._bank_seed = seed  # the bank has its own stream: rebuilding it moves nothing else
        self._bank: dict[str, list[np.ndarray]] | None = None

    def reseed(self, seed: int) -> None:
        """Give each data-loader worker its own stream (forked workers inherit one state)."""
        self.rng = np.random.default_rng(seed)

    def pick(self) -> bool:
        """Draw whether the next utterance is corrupted."""
        return bool(self.rng.random() < self.p)

    @property
    def bank(self) -> dict[str, list[np.ndarray]]:
        if self._bank is None:
            n = int(self.bank_seconds * SAMPLE_RATE)
            rng = np.random.default_rng(None if self._bank_seed is None else [self._bank_seed, 7])
            self._bank = {k: [make_noise(k, n, self.source, rng)
                              for _ in range(self.bank_clips)] for k in NOISE_KINDS}
        return self._bank

    def _noise_like(self, n: int, kind: str) -> np.ndarray:
        clip = self.bank[kind][self.rng.integers(len(self.bank[kind]))]
        if n > len(clip):
            clip = np.tile(clip, -(-n // len(clip)))
        start = int(self.rng.integers(0, len(clip) - n + 1))
        return clip[start:start + n]

    def corrupt(self, x: np.ndarray) -> np.ndarray:
        kind = str(self.rng.choice(NOISE_KINDS))
        snr = float(self.rng.uniform(*self.source.snr_db))
        if self.rng.random() < 0.25:
            x = reverberate(x, float(self.rng.uniform(*self.source.rt60_s)), self.rng)
        return normalize_peak(mix_at_snr(x, self._noise_like(len(x), kind), snr))
