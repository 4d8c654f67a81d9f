"""The synthetic speakers of the built-in corpus.

A speaker is a TTS voice (espeak-ng accent + variant, or a flite voice) with its own base pitch
and speaking rate; each utterance jitters both a little, and its loudness is sampled. Variants are
split into two disjoint pools so that test-other's speakers differ in timbre from every training
speaker, not only in pitch.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Human-sounding variants only (the robotic, whispering and joke variants are left out).
ESPEAK_VARIANTS_SEEN = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "Annie", "Andy", "adam",
                        "david", "linda", "max", "paul", "steph", "robert", "benjamin",
                        "belinda", "john", "zac", "edward", "iven", "quincy", "Alicia")
ESPEAK_VARIANTS_UNSEEN = ("m5", "m6", "m7", "f4", "f5", "Andrea", "aunty", "michel", "rob",
                          "gustave", "steph2", "Mike")
FLITE_SEEN = ("awb", "rms", "kal16")
FLITE_UNSEEN = ("slt",)


@dataclass(frozen=True)
class Voice:
    id: str
    engine: str  # "espeak" or "flite"
    name: str  # espeak "accent+variant", or the flite voice name
    pitch: int  # espeak base pitch 0..99 (ignored by flite)
    rate: float  # 1.0 = the engine's default speaking rate

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VoiceCounts:
    espeak_seen: int
    flite_seen: int
    espeak_unseen: int
    flite_unseen: int


VOICE_COUNTS = {
    "tiny": VoiceCounts(espeak_seen=5, flite_seen=1, espeak_unseen=2, flite_unseen=1),
    "demo": VoiceCounts(espeak_seen=10, flite_seen=2, espeak_unseen=4, flite_unseen=1),
    "full": VoiceCounts(espeak_seen=36, flite_seen=3, espeak_unseen=9, flite_unseen=1),
}


def _espeak_voices(rng: random.Random, variants: tuple[str, ...], n: int) -> list[Voice]:
    # Round-robin over shuffled variants so n voices use min(n, len(variants)) distinct timbres.
    order = list(variants)
    rng.shuffle(order)
    accents = {v: rng.sample(ESPEAK_ACCENTS, len(ESPEAK_ACCENTS)) for v in order}
    assert n <= len(order) * len(ESPEAK_ACCENTS), n
    picked = [(accents[order[i % len(order)]][i // len(order)], order[i % len(order)])
              for i in range(n)]
    voices = []
    for accent, variant in picked:
        pitch = rng.randint(30, 70)
        rate = round(rng.uniform(0.85, 1.15), 2)
        vid = f"espeak-{accent}-{variant.lower()}-p{pitch}-r{int(rate * 100)}"
        voices.append(Voice(vid, "espeak", f"{accent}+{variant}", pitch, rate))
    return voices


def _flite_voices(rng: random.Random, names: tuple[str, ...], n: int) -> list[Voice]:
    out = []
    for name in list(names)[:n]:
        rate = round(rng.uniform(0.9, 1.1), 2)
        out.append(Voice(f"flite-{name}-r{int(rate * 100)}", "flite", name, 0, rate))
    return out


def pick_voices(size: str, seed: int) -> tuple[list[Voice], list[Voice]]:
    """(seen voices for train/dev/test-clean, unseen voices for test-other); disjoint timbres."""
    if size not in VOICE_COUNTS:
        raise ValueError(f"unknown corpus size {size!r}; expected one of {sorted(VOICE_COUNTS)}")
    c = VOICE_COUNTS[size]
    rng = random.Random(f"voices-{seed}")
    seen = _espeak_voices(rng, ESPEAK_VARIANTS_SEEN, c.espeak_seen)
    seen += _flite_voices(rng, FLITE_SEEN, c.flite_seen)
    unseen = _espeak_voices(rng, ESPEAK_VARIANTS_UNSEEN, c.espeak_unseen)
    unseen += _flite_voices(rng, FLITE_UNSEEN, c.flite_unseen)
    return seen, unseen
