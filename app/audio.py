"""An utterance's audio as WAV bytes at its real level (``st.audio`` peak-normalises numpy
arrays, which would make a quiet recording sound as loud as any other)."""

from __future__ import annotations

import io
from pathlib import Path

import soundfile as sf


class AudioMissing(Exception):
    """The audio file of an utterance is gone or unreadable."""


def wav_bytes(path: str | Path | None, start: float | None = 0.0,
              duration: float | None = None) -> bytes:
    if not path:
        raise AudioMissing("this utterance has no audio file recorded in the store")
    try:
        info = sf.info(str(path))
        first = int(round((start or 0.0) * info.samplerate))
        frames = -1 if duration is None else int(round(duration * info.samplerate))
        data, sr = sf.read(str(path), start=first, frames=frames, dtype="int16", always_2d=False)
    except (OSError, RuntimeError, sf.LibsndfileError) as e:
        raise AudioMissing(f"{path}: cannot read audio ({e})") from None
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()
