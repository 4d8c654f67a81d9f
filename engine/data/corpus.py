"""The on-disk layout every corpus shares (synthesized or imported), and ``corpus info``.

```
CORPUS/
  corpus.json                                  how it was made (kind, size, seed or source dir)
  manifests/recordings_SPLIT.jsonl.gz           lhotse RecordingSet
  manifests/supervisions_SPLIT.jsonl.gz         lhotse SupervisionSet (text, speaker)
  manifests/cuts_SPLIT.jsonl.gz                 lhotse CutSet, one cut per recording
  audio/SPLIT/*.flac                            synthesized audio (imports reference theirs in place)
  import_report.json                            importers: what was skipped or resampled, and why
  tokenizer/, features/                         derived data, keyed by their settings
```

Split names follow LibriSpeech: ``train``, ``dev``, ``test-clean``, ``test-other`` (imports may add
others, e.g. ``dev-other``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSet

SPLITS = ("train", "dev", "test-clean", "test-other")
MANIFEST_KINDS = ("recordings", "supervisions", "cuts")


class CorpusError(Exception):
    """A corpus folder that cannot be used; the message names the file and the problem."""


def manifest_path(root: Path, kind: str, split: str) -> Path:
    assert kind in MANIFEST_KINDS, kind
    return Path(root) / "manifests" / f"{kind}_{split}.jsonl.gz"


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def atomic_dir(target: Path, keep_existing: bool = False):
    """Yield a fresh folder beside ``target``; when the block succeeds it replaces ``target``,
    when it fails it is removed. Nothing half-written is ever left at ``target``.
    ``keep_existing``: a cache another process finished first stays (ours is dropped), so a
    folder someone may be reading is never replaced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if target.exists():
        if keep_existing:
            shutil.rmtree(work, ignore_errors=True)
            return
        shutil.rmtree(target)
    try:
        os.replace(work, target)
    except OSError:
        if not (keep_existing and target.exists()):  # lost the race to another process
            raise
        shutil.rmtree(work, ignore_errors=True)


def write_manifests(root: Path, split: str, recordings: RecordingSet,
                    supervisions: SupervisionSet) -> CutSet:
    """Write the three manifests of one split, each atomically; returns the cuts."""
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions).to_eager()
    if all(len(c.supervisions) == 1 and c.supervisions[0].start == 0
           and abs(c.supervisions[0].duration - c.duration) < 0.05 for c in cuts):
        # One utterance per file: one cut per recording, named after it.
        cuts = CutSet.from_cuts(c.with_id(c.recording_id) for c in cuts)
    else:
        # Long recordings with several segments: one cut per supervision.
        cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
    (Path(root) / "manifests").mkdir(parents=True, exist_ok=True)
    for kind, manifest in (("recordings", recordings), ("supervisions", supervisions),
                           ("cuts", cuts)):
        path = manifest_path(root, kind, split)
        tmp = path.with_name("tmp-" + path.name)
        manifest.to_file(tmp)
        os.replace(tmp, path)
    return cuts


def corpus_splits(root: Path) -> list[str]:
    """Splits with a cuts manifest, in the canonical order first."""
    root = Path(root)
    found = sorted(p.name[len("cuts_"):-len(".jsonl.gz")]
                   for p in (root / "manifests").glob("cuts_*.jsonl.gz"))
    return [s for s in SPLITS if s in found] + [s for s in found if s not in SPLITS]


def check_corpus(root: Path) -> dict:
    """The corpus metadata, or a CorpusError saying what is missing."""
    root = Path(root)
    meta_path = root / "corpus.json"
    if not root.is_dir():
        raise CorpusError(f"{root}: no such corpus folder")
    if not meta_path.exists():
        raise CorpusError(f"{root}: not a corpus (no corpus.json); make one with "
                          f"`asrlab corpus synth` or `asrlab corpus import`")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CorpusError(f"{meta_path}: not valid JSON ({e})") from e
    if not meta.get("complete", False):
        raise CorpusError(f"{root}: the corpus is incomplete (an interrupted synthesis?); "
                          f"rerun the same `asrlab corpus synth` command to finish it")
    if not corpus_splits(root):
        raise CorpusError(f"{root}: no manifests under {root / 'manifests'}")
    return meta


def load_cuts(root: Path, split: str) -> CutSet:
    path = manifest_path(root, "cuts", split)
    if not path.exists():
        raise CorpusError(f"{root}: no split {split!r} (missing {path}); "
                          f"splits here: {corpus_splits(root)}")
    return CutSet.from_file(path)


def load_supervisions(root: Path, split: str) -> SupervisionSet:
    path = manifest_path(root, "supervisions", split)
    if not path.exists():
        raise CorpusError(f"{root}: no split {split!r} (missing {path})")
    return SupervisionSet.from_file(path)


def corpus_info(root: Path) -> dict:
    """Size, voices and vocabulary of every split, and how each overlaps with train.

    ``sentence_overlap_with_train`` counts the split's distinct transcripts that also occur in
    train; ``voice_overlap_with_train`` counts its speakers that also speak in train. For a fair
    test both must be 0 for sentences and, for test-other, for voices.
    """
    meta = check_corpus(root)
    stats: dict[str, dict] = {}
    train_texts: set[str] = set()
    train_voices: set[str] = set()
    train_vocab: set[str] = set()
    per_split = {}
    for split in corpus_splits(root):
        sups = list(load_supervisions(root, split))
        per_split[split] = sups
        if split == "train":
            train_texts = {s.text for s in sups}
            train_voices = {s.speaker for s in sups}
            train_vocab = {w for s in sups for w in s.text.split()}
    for split, sups in per_split.items():
        texts = [s.text or "" for s in sups]
        words = Counter(w for t in texts for w in t.split())
        voices = {s.speaker for s in sups}
        durations = sorted(s.duration for s in sups)
        n_words = sum(words.values())
        oov = sum(c for w, c in words.items() if w not in train_vocab)
        corrupted = [s.custom.get("corruption") for s in sups
                     if s.custom and s.custom.get("corruption")]
        entry = {
            "utterances": len(sups),
            "hours": round(sum(durations) / 3600.0, 3),
            "voices": len(voices),
            "words": n_words,
            "vocabulary": len(words),
            "sentence_overlap_with_train": len(set(texts) & train_texts),
            "voice_overlap_with_train": len(voices & train_voices),
            "oov_rate_vs_train": round(oov / n_words, 4) if n_words else 0.0,
            "duration_s": {"min": round(durations[0], 2), "median":
                           round(durations[len(durations) // 2], 2), "max": round(durations[-1], 2)}
            if durations else None,
        }
        if corrupted:
            snrs = sorted(c["snr_db"] for c in corrupted)
            entry["noisy_utterances"] = len(corrupted)
            entry["snr_db"] = {"min": snrs[0], "median": snrs[len(snrs) // 2], "max": snrs[-1]}
            entry["effects"] = dict(Counter(c["effect"] for c in corrupted))
        stats[split] = entry
    return {"corpus": str(Path(root).resolve()), "kind": meta.get("kind"),
            "size": meta.get("size"), "seed": meta.get("seed"), "splits": stats}
