"""``asrlab corpus import``: bring real data (LibriSpeech's layout, or any lhotse manifests).

Both importers write the layout of ``engine.data.corpus`` (audio stays where it is; manifests
point at it), after validating every utterance:

- audio file missing or unreadable (including truncated files: the last samples are read);
- empty transcript;
- declared duration disagreeing with the file (more than 50 ms and 1%);
- sample rate other than 16 kHz: kept, and resampled on load (lhotse records the transform); the
  report says so;
- more than one channel: kept, first channel used; the report says so.

Bad utterances are skipped and listed in ``import_report.json`` (and printed: count and first
examples); with ``strict=True`` any problem is fatal. The corpus is assembled in a temporary
folder beside ``out`` and renamed into place only when complete, so a failure leaves nothing
half-written.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from lhotse import (AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment,
                    SupervisionSet)
from lhotse.utils import fastcopy

from engine.data.corpus import atomic_dir, write_json_atomic, write_manifests

SAMPLE_RATE = 16_000
DURATION_TOLERANCE_S = 0.05
DURATION_TOLERANCE_REL = 0.01
LIBRISPEECH_SPLITS = {
    "train-clean-100": "train", "train-clean-360": "train", "train-other-500": "train",
    "dev-clean": "dev", "dev-other": "dev-other", "test-clean": "test-clean",
    "test-other": "test-other",
}


class CorpusImportError(Exception):
    """An import that cannot go on; the message names the file and the problem."""


@dataclass
class Problem:
    id: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem} (utterance {self.id})"


@dataclass
class ImportReport:
    source: str
    checked: int = 0
    kept: int = 0
    skipped: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)  # kept, but changed (resampled, downmixed)
    splits: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "checked": self.checked, "kept": self.kept,
                "skipped": len(self.skipped), "splits": self.splits,
                "skipped_utterances": [p.__dict__ for p in self.skipped],
                "notes": [p.__dict__ for p in self.notes]}

    def summary(self, examples: int = 5) -> str:
        lines = [f"checked {self.checked} utterances from {self.source}: kept {self.kept}, "
                 f"skipped {len(self.skipped)}"]
        for p in self.skipped[:examples]:
            lines.append(f"  skipped {p}")
        if len(self.skipped) > examples:
            lines.append(f"  ... and {len(self.skipped) - examples} more (see import_report.json)")
        kinds: dict[str, int] = {}
        for p in self.notes:
            kinds[p.problem.split(":")[0]] = kinds.get(p.problem.split(":")[0], 0) + 1
        for kind, n in kinds.items():
            first = next(p for p in self.notes if p.problem.startswith(kind))
            lines.append(f"  {n} x {kind}, e.g. {first}")
        return "\n".join(lines)


# ----- validation -------------------------------------------------------------------------------
def check_recording(rec: Recording, declared_duration: float | None = None
                    ) -> tuple[Recording | None, list[str], list[str]]:
    """(recording to keep or None, fatal problems, notes) for one file-backed recording."""
    src = rec.sources[0]
    if src.type != "file":
        return rec, [], []  # URLs and in-memory audio: lhotse will read them; nothing to check here
    path = src.source
    if not os.path.exists(path):
        return None, ["audio file is missing"], []
    try:
        info = sf.info(path)
        with sf.SoundFile(path) as f:
            f.seek(max(0, info.frames - 1600))  # decode the tail: catches truncated files
            f.read(1600)
    except Exception as e:  # soundfile raises several kinds; all mean "cannot use this file"
        return None, [f"audio file is unreadable ({type(e).__name__}: {str(e).strip()[:120]})"], []
    if info.frames == 0:
        return None, ["audio file holds no samples"], []
    problems, notes = [], []
    actual = info.frames / info.samplerate
    if declared_duration is not None:
        gap = abs(actual - declared_duration)
        if gap > max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_REL * actual):
            problems.append(f"duration disagrees with the file: manifest says "
                            f"{declared_duration:.3f} s, file has {actual:.3f} s")
    rec = Recording(id=rec.id, sources=rec.sources, sampling_rate=info.samplerate,
                    num_samples=info.frames, duration=actual, channel_ids=rec.channel_ids,
                    transforms=rec.transforms)
    if info.samplerate != SAMPLE_RATE:
        notes.append(f"resampled: {info.samplerate} Hz to {SAMPLE_RATE} Hz on load")
        rec = rec.resample(SAMPLE_RATE)
    if info.channels > 1:
        notes.append(f"downmixed: {info.channels} channels, first channel used")
    return rec, problems, notes


def validate(recordings: RecordingSet, supervisions: SupervisionSet, report: ImportReport,
             strict: bool, declared_durations: bool, jobs: int = 4
             ) -> tuple[RecordingSet, SupervisionSet]:
    """Keep only utterances whose audio and transcript are usable; record every problem.

    ``declared_durations``: the manifests state durations (lhotse), so check them against the
    files; otherwise (LibriSpeech) durations come from the files.
    """
    sups_by_rec: dict[str, list[SupervisionSegment]] = {}
    for s in supervisions:
        sups_by_rec.setdefault(s.recording_id, []).append(s)
    recs = list(recordings)
    declared = {r.id: r.duration for r in recs} if declared_durations else {}

    def one(rec: Recording):
        return check_recording(rec, declared.get(rec.id))

    with ThreadPoolExecutor(jobs) as pool:
        checked = list(pool.map(one, recs))
    kept_recs, kept_sups = [], []
    for rec, (new_rec, problems, notes) in zip(recs, checked):
        path = rec.sources[0].source
        sups = sups_by_rec.get(rec.id, [])
        report.checked += max(1, len(sups))
        if not sups:
            problems = problems + ["no transcript for this recording"]
        for s in sups:
            if not (s.text or "").strip():
                problems = problems + [f"empty transcript (supervision {s.id})"]
            elif new_rec is not None and s.end > new_rec.duration + DURATION_TOLERANCE_S:
                problems = problems + [f"supervision {s.id} ends at {s.end:.2f} s, after the "
                                       f"audio ({new_rec.duration:.2f} s)"]
        if problems:
            for p in problems:
                report.skipped.append(Problem(rec.id, path, p))
            if strict:
                raise CorpusImportError(f"{path}: {problems[0]} (utterance {rec.id}); "
                                   f"rerun without --strict to skip bad utterances")
            continue
        for n in notes:
            report.notes.append(Problem(rec.id, path, n))
        kept_recs.append(new_rec)
        # LibriSpeech states no durations: its supervisions span the whole file.
        kept_sups.extend(s if s.duration > 0 else fastcopy(s, duration=new_rec.duration)
                         for s in sups)
        report.kept += len(sups)
    orphans = set(sups_by_rec) - {r.id for r in recs}
    for rid in sorted(orphans):
        report.skipped.append(Problem(rid, "(none)", "transcript without a recording"))
        if strict:
            raise CorpusImportError(f"supervision for recording {rid} has no recording in the manifests")
    return RecordingSet.from_recordings(kept_recs), SupervisionSet.from_segments(kept_sups)


# ----- writing the corpus ------------------------------------------------------------------------
def check_out(src: Path, out: Path, force: bool) -> None:
    """Refuse an ``--out`` that would destroy data: the source folder itself, a folder inside it
    or above it (replacing ``--out`` deletes what it holds), or with ``--force`` a folder the lab
    did not write (no ``corpus.json``). Called before anything is read."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if out == src or src in out.parents or out in src.parents:
        where = ("is" if out == src else "lies inside" if src in out.parents else "contains")
        raise CorpusImportError(f"--out {out} {where} the source {src}: writing the corpus "
                                f"there would delete the audio it imports; choose another --out")
    if out.exists():
        if not force:
            raise CorpusImportError(f"{out} already exists; choose another --out or pass --force")
        if not (out / "corpus.json").exists():
            raise CorpusImportError(f"--force replaces only a corpus the lab wrote (a folder "
                                    f"with corpus.json); {out} is not one, so it stays: choose "
                                    f"another --out or remove it yourself")


def _finish(out: Path, kind: str, source: str,
            parts: dict[str, tuple[RecordingSet, SupervisionSet]], report: ImportReport,
            strict: bool, force: bool, declared_durations: bool) -> ImportReport:
    out = Path(out).resolve()
    check_out(Path(source), out, force)
    with atomic_dir(out) as work:
        for split, (recs, sups) in parts.items():
            recs, sups = validate(recs, sups, report, strict, declared_durations)
            if len(recs) == 0:
                report.splits[split] = 0
                continue
            write_manifests(work, split, recs, sups)
            report.splits[split] = len(sups)
        if report.kept == 0:
            raise CorpusImportError(f"{source}: no usable utterances (skipped {len(report.skipped)}); "
                               f"first problem: {report.skipped[0] if report.skipped else 'none'}")
        write_json_atomic(work / "import_report.json", report.to_dict())
        write_json_atomic(work / "corpus.json", {
            "kind": kind, "source": source, "complete": True, "sample_rate": SAMPLE_RATE,
            "splits": [s for s, n in report.splits.items() if n],
            "utterances": report.kept, "skipped": len(report.skipped),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return report


def import_librispeech(src: Path, out: Path, subsets: list[str] | None = None,
                       strict: bool = False, force: bool = False) -> ImportReport:
    """LibriSpeech layout: ``[ROOT/]SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac`` with
    ``SPEAKER-CHAPTER.trans.txt`` (lines ``UTTERANCE-ID TRANSCRIPT``) in each chapter folder.

    ``src`` may be the root holding subsets (train-clean-100, dev-clean, ...) or one subset. Train
    subsets merge into ``train``; dev-clean becomes ``dev``; others keep their names.
    """
    src = Path(src).resolve()
    if not src.is_dir():
        raise CorpusImportError(f"{src}: no such folder")
    check_out(src, out, force)
    found = {p.name: p for p in sorted(src.iterdir()) if p.is_dir() and any(p.glob("*/*/*.trans.txt"))}
    if not found and any(src.glob("*/*/*.trans.txt")):
        found = {src.name: src}
    if not found:
        raise CorpusImportError(f"{src}: no LibriSpeech subsets found (expected "
                           f"SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt)")
    if subsets:
        missing = [s for s in subsets if s not in found]
        if missing:
            raise CorpusImportError(f"{src}: subsets {missing} not found; present: {sorted(found)}")
        found = {k: v for k, v in found.items() if k in subsets}
    report = ImportReport(source=f"{src} (librispeech)")
    parts: dict[str, tuple[list, list]] = {}
    for subset, folder in found.items():
        split = LIBRISPEECH_SPLITS.get(subset, subset)
        recs, sups = parts.setdefault(split, ([], []))
        for trans in sorted(folder.glob("*/*/*.trans.txt")):
            try:
                text_lines = trans.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                line_no = trans.read_bytes()[: e.start].count(b"\n") + 1
                raise CorpusImportError(f"{trans}:{line_no}: not UTF-8 text (byte "
                                        f"{e.object[e.start]:#04x}); LibriSpeech transcripts "
                                        f"are UTF-8: convert the file") from None
            for lineno, line in enumerate(text_lines, 1):
                if not line.strip():
                    continue
                uid, _, text = line.strip().partition(" ")
                if not re.fullmatch(r"\d+-\d+-\d+", uid):
                    problem = Problem(uid, f"{trans}:{lineno}", "malformed line, expected "
                                      f"'SPEAKER-CHAPTER-NNNN TRANSCRIPT', got {line[:60]!r}")
                    if strict:
                        raise CorpusImportError(f"{problem.file}: {problem.problem}")
                    report.checked += 1
                    report.skipped.append(problem)
                    continue
                audio = trans.parent / f"{uid}.flac"
                speaker = uid.split("-")[0]
                recs.append(Recording(id=uid, sources=[AudioSource("file", [0], str(audio))],
                                      sampling_rate=SAMPLE_RATE, num_samples=0, duration=0.0))
                sups.append(SupervisionSegment(id=uid, recording_id=uid, start=0.0, duration=0.0,
                                               channel=0, text=text.strip(), language="English",
                                               speaker=speaker, custom={"subset": subset}))
    parts = {split: (RecordingSet.from_recordings(r), SupervisionSet.from_segments(s))
             for split, (r, s) in parts.items()}
    return _finish(out, "librispeech", str(src), parts, report, strict, force,
                   declared_durations=False)


def check_jsonl(path: Path) -> None:
    """Every line of a (gzipped) JSON-lines manifest parses as a JSON object; otherwise a
    CorpusImportError naming the file and line (a truncated .gz names where it ends)."""
    import gzip
    import json
    import zlib

    opener = gzip.open if path.name.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusImportError(f"{path}:{lineno}: not a JSON line ({e.msg} at "
                                            f"column {e.colno})") from None
                if not isinstance(row, dict) or "id" not in row:
                    raise CorpusImportError(f"{path}:{lineno}: not a lhotse manifest entry "
                                            f"(a JSON object with an \"id\")")
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        if isinstance(e, CorpusImportError):
            raise
        raise CorpusImportError(f"{path}: a damaged or truncated gzip file (it ends after "
                                f"line {lineno}: {type(e).__name__}: {e}); copy it again") from None
    except UnicodeDecodeError as e:
        raise CorpusImportError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason})") from None


def _split_of(manifest: Path) -> str:
    """'librispeech_cuts_dev-clean.jsonl.gz' -> 'dev' (LibriSpeech names map as on import)."""
    stem = manifest.name.split(".")[0]
    name = stem.rsplit("_", 1)[-1] if "_" in stem else stem
    if name in ("cuts", "recordings", "supervisions"):
        name = "train"
    return LIBRISPEECH_SPLITS.get(name, name)


def import_lhotse(src: Path, out: Path, strict: bool = False, force: bool = False,
                  split: str | None = None) -> ImportReport:
    """Any lhotse manifests: ``*recordings*.jsonl[.gz]`` with ``*supervisions*`` of the same
    split, or ``*cuts*.jsonl[.gz]`` (icefall's ``data/fbank`` or ``data/manifests``). The split
    is the file name's last ``_`` part (``librispeech_cuts_train-clean-100`` -> ``train``);
    ``split`` overrides it for a folder of one split.
    """
    src = Path(src).resolve()
    if not src.is_dir():
        raise CorpusImportError(f"{src}: no such folder")
    check_out(src, out, force)
    files = sorted(p for p in src.iterdir() if re.search(r"\.jsonl(\.gz)?$", p.name))
    by_split: dict[str, dict[str, Path]] = {}
    for f in files:
        kind = next((k for k in ("recordings", "supervisions", "cuts") if k in f.name), None)
        if kind is None:
            continue
        target = split or _split_of(f)
        if kind in by_split.setdefault(target, {}):
            raise CorpusImportError(f"{f}: a second {kind} manifest for split {target!r} "
                               f"(first: {by_split[target][kind].name}); pass --split or "
                               f"import the folders one at a time")
        by_split[target][kind] = f
    if not by_split:
        raise CorpusImportError(f"{src}: no lhotse manifests (*recordings*.jsonl.gz with "
                           f"*supervisions*.jsonl.gz, or *cuts*.jsonl.gz)")
    report = ImportReport(source=f"{src} (lhotse)")
    parts = {}
    for name, kinds in by_split.items():
        for f in kinds.values():
            check_jsonl(f)
        try:
            if "recordings" in kinds and "supervisions" in kinds:
                recs = RecordingSet.from_file(kinds["recordings"])
                sups = SupervisionSet.from_file(kinds["supervisions"])
            elif "cuts" in kinds:
                cuts = CutSet.from_file(kinds["cuts"]).to_eager()
                recs = RecordingSet.from_recordings(
                    {c.recording.id: c.recording for c in cuts if c.has_recording}.values())
                sups = SupervisionSet.from_segments(
                    {s.id: s for c in cuts for s in c.supervisions}.values())
            else:
                have = ", ".join(p.name for p in kinds.values())
                raise CorpusImportError(f"{src}: split {name!r} has {have} but needs recordings with "
                                   f"supervisions, or cuts")
        except CorpusImportError:
            raise
        except Exception as e:
            bad = ", ".join(str(p) for p in kinds.values())
            raise CorpusImportError(f"{bad}: not a readable lhotse manifest "
                               f"({type(e).__name__}: {str(e)[:200]})") from e
        parts[name] = (recs, sups)
    return _finish(out, "lhotse", str(src), parts, report, strict, force,
                   declared_durations=True)
