"""Public testing helpers: tiny real data that every test suite of the lab (and its users' own
tests) can build on. Nothing here is mocked: the tiny corpus is real espeak-ng/flite speech.

- ``tiny_corpus(root)``: the ``tiny`` synthesized corpus (about 200 utterances, a few seconds to
  make), made once per folder and reused.
- ``tiny_tokenizer(corpus)``: a small sentencepiece tokenizer trained on its train split.
- ``make_librispeech_tree(corpus, dest, ...)``: a LibriSpeech-layout folder built from a corpus's
  FLAC files, optionally with the bad files real data has (corrupt audio, empty transcript, a
  wrong sample rate, a missing file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.data.corpus import load_supervisions
from engine.data.synth import synthesize
from engine.data.tokenizer import Tokenizer, tokenizer_dir, train_tokenizer


def tiny_corpus(root: Path, seed: int = 0) -> Path:
    root = Path(root)
    if not (root / "corpus.json").exists() or '"complete": true' not in (
            root / "corpus.json").read_text():
        synthesize(root, size="tiny", seed=seed, progress=False)
    return root


def tiny_tokenizer(corpus: Path, vocab_size: int = 64) -> Tokenizer:
    path = tokenizer_dir(corpus, vocab_size)
    if not (path / "tokenizer.model").exists():
        texts = [s.text for s in load_supervisions(corpus, "train")]
        train_tokenizer(texts, path, vocab_size)
    return Tokenizer(path)


def make_librispeech_tree(corpus: Path, dest: Path, per_split: int = 6,
                          with_bad_files: bool = False) -> dict[str, str]:
    """Copy some of ``corpus``'s utterances into LibriSpeech's layout under ``dest``.

    Subsets: train-clean-100 (from train), dev-clean (dev), test-other (test-other); speaker ids
    come from the voices, chapters are numbered. With ``with_bad_files`` the train subset also gets
    a corrupt FLAC, an empty transcript, an 8 kHz file and a transcript line whose audio is
    missing. Returns {problem: utterance id} for the planted problems.
    """
    dest = Path(dest)
    planted: dict[str, str] = {}
    for subset, split in (("train-clean-100", "train"), ("dev-clean", "dev"),
                          ("test-other", "test-other")):
        sups = list(load_supervisions(corpus, split))[:per_split]
        speakers = {s: 100 + i for i, s in enumerate(sorted({x.speaker for x in sups}))}
        by_chapter: dict[Path, list[str]] = {}
        for n, s in enumerate(sups):
            spk = speakers[s.speaker]
            chapter = dest / subset / str(spk) / "7"
            chapter.mkdir(parents=True, exist_ok=True)
            uid = f"{spk}-7-{n:04d}"
            src = Path(corpus) / "audio" / split / f"{s.recording_id}.flac"
            shutil.copy(src, chapter / f"{uid}.flac")
            by_chapter.setdefault(chapter, []).append(f"{uid} {s.text}")
        for chapter, lines in by_chapter.items():
            (chapter / f"{chapter.parent.name}-7.trans.txt").write_text("\n".join(lines) + "\n")
    if with_bad_files:
        chapter = sorted((dest / "train-clean-100").glob("*/7"))[0]
        spk = chapter.parent.name
        trans = chapter / f"{spk}-7.trans.txt"
        lines = trans.read_text().splitlines()
        flacs = sorted(chapter.glob("*.flac"))
        # a corrupt file: the header of a FLAC then garbage
        (chapter / f"{spk}-7-9001.flac").write_bytes(flacs[0].read_bytes()[:200] + b"\x00garbage" * 50)
        lines.append(f"{spk}-7-9001 THIS FILE IS CORRUPT")
        planted["corrupt"] = f"{spk}-7-9001"
        # an empty transcript
        shutil.copy(flacs[0], chapter / f"{spk}-7-9002.flac")
        lines.append(f"{spk}-7-9002")
        planted["empty"] = f"{spk}-7-9002"
        # 8 kHz audio (kept, resampled on load)
        x, sr = sf.read(flacs[0])
        sf.write(chapter / f"{spk}-7-9003.flac", x[::2].astype(np.float32), sr // 2)
        lines.append(f"{spk}-7-9003 " + lines[0].split(" ", 1)[1])
        planted["8khz"] = f"{spk}-7-9003"
        # a transcript whose audio is missing
        lines.append(f"{spk}-7-9004 THERE IS NO AUDIO FOR THIS LINE")
        planted["missing"] = f"{spk}-7-9004"
        trans.write_text("\n".join(lines) + "\n")
    return planted
