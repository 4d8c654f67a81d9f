import gzip
import json
import subprocess
import sys

import pytest
from lhotse import RecordingSet, SupervisionSet

from engine.data.corpus import corpus_info, load_cuts, manifest_path
from engine.data.importers import CorpusImportError, import_librispeech, import_lhotse
from engine.testing import make_librispeech_tree

ASRLAB = [sys.executable, "-m", "engine.cli"]


@pytest.fixture()
def libri(tiny, tmp_path):
    root = tmp_path / "LibriSpeech"
    planted = make_librispeech_tree(tiny, root, with_bad_files=True)
    return root, planted


def test_librispeech_layout_imports_and_skips_bad_files(libri, tmp_path):
    root, planted = libri
    out = tmp_path / "ls"
    report = import_librispeech(root, out)
    skipped = {p.id: p.problem for p in report.skipped}
    assert "unreadable" in skipped[planted["corrupt"]]
    assert "empty transcript" in skipped[planted["empty"]]
    assert "missing" in skipped[planted["missing"]]
    assert planted["8khz"] not in skipped
    assert any(n.id == planted["8khz"] and "resampled: 8000 Hz" in n.problem for n in report.notes)
    assert set(report.splits) == {"train", "dev", "test-other"}
    saved = json.loads((out / "import_report.json").read_text())
    assert saved["skipped"] == 3 and len(saved["skipped_utterances"]) == 3
    # the 8 kHz file loads at 16 kHz, with the right length
    cut = next(c for c in load_cuts(out, "train") if c.id == planted["8khz"])
    assert cut.sampling_rate == 16000
    assert abs(cut.load_audio().shape[1] - round(cut.duration * 16000)) <= 1
    info = corpus_info(out)["splits"]
    assert info["train"]["utterances"] == report.splits["train"]
    assert info["dev"]["sentence_overlap_with_train"] == 0


def test_strict_import_fails_naming_the_file_and_leaves_nothing(libri, tmp_path):
    root, planted = libri
    out = tmp_path / "strict"
    with pytest.raises(CorpusImportError) as e:
        import_librispeech(root, out, strict=True)
    msg = str(e.value)
    assert any(uid in msg for uid in planted.values()), msg
    assert not out.exists()
    assert not list(tmp_path.glob("strict.partial-*"))


def test_librispeech_single_subset_and_subset_filter(libri, tmp_path):
    root, _ = libri
    r = import_librispeech(root / "dev-clean", tmp_path / "one")
    assert r.splits == {"dev": r.kept} and r.kept > 0
    r = import_librispeech(root, tmp_path / "two", subsets=["test-other"])
    assert set(r.splits) == {"test-other"}
    with pytest.raises(CorpusImportError, match="not found"):
        import_librispeech(root, tmp_path / "three", subsets=["train-clean-360"])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CorpusImportError, match="no LibriSpeech subsets"):
        import_librispeech(tmp_path / "nothing", tmp_path / "four")


def _copy_manifests(tiny, dest, prefix="mycorpus"):
    dest.mkdir()
    for split in ("train", "dev"):
        for kind in ("recordings", "supervisions"):
            src = manifest_path(tiny, kind, split)
            (dest / f"{prefix}_{kind}_{split}.jsonl.gz").write_bytes(src.read_bytes())
    return dest


def test_lhotse_manifests_import(tiny, tmp_path):
    src = _copy_manifests(tiny, tmp_path / "manifests")
    report = import_lhotse(src, tmp_path / "out")
    assert report.splits == {"train": 140, "dev": 20}
    assert not report.skipped
    assert len(load_cuts(tmp_path / "out", "train")) == 140


def test_lhotse_cuts_only_import(tiny, tmp_path):
    src = tmp_path / "fbank"
    src.mkdir()
    (src / "icefall_cuts_test-clean.jsonl.gz").write_bytes(
        manifest_path(tiny, "cuts", "test-clean").read_bytes())
    report = import_lhotse(src, tmp_path / "out")
    assert report.splits == {"test-clean": 20}


def test_lhotse_duration_mismatch_and_empty_text_are_skipped(tiny, tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    recs = RecordingSet.from_file(manifest_path(tiny, "recordings", "dev")).to_eager()
    sups = SupervisionSet.from_file(manifest_path(tiny, "supervisions", "dev")).to_eager()
    rec_list, sup_list = list(recs), list(sups)
    bad_rec = rec_list[0]
    rec_list[0] = bad_rec.__class__(id=bad_rec.id, sources=bad_rec.sources, sampling_rate=16000,
                                    num_samples=bad_rec.num_samples + 16000,
                                    duration=bad_rec.duration + 1.0)
    from lhotse.utils import fastcopy
    sup_list[0] = fastcopy(sup_list[0], duration=sup_list[0].duration + 1.0)
    sup_list[1] = fastcopy(sup_list[1], text="   ")
    RecordingSet.from_recordings(rec_list).to_file(src / "x_recordings_dev.jsonl.gz")
    SupervisionSet.from_segments(sup_list).to_file(src / "x_supervisions_dev.jsonl.gz")
    report = import_lhotse(src, tmp_path / "out")
    problems = {}
    for p in report.skipped:
        problems[p.id] = problems.get(p.id, "") + p.problem + "; "
    assert "duration disagrees with the file: manifest says" in problems[rec_list[0].id]
    assert "empty transcript" in problems[rec_list[1].id]
    assert report.kept == 18 and report.checked == 20


def test_lhotse_malformed_manifest_names_the_file(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    with gzip.open(src / "x_cuts_train.jsonl.gz", "wt") as f:
        f.write("{not json\n")
    with pytest.raises(CorpusImportError, match="x_cuts_train.jsonl.gz"):
        import_lhotse(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_imports_and_reports(libri, tmp_path):
    root, planted = libri
    out = tmp_path / "cli"
    p = subprocess.run(ASRLAB + ["corpus", "import", "librispeech", str(root), "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "skipped 3" in p.stdout and planted["corrupt"] in p.stdout
    p = subprocess.run(ASRLAB + ["corpus", "import", "librispeech", str(root), "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "already exists" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(ASRLAB + ["corpus", "import", "librispeech", str(root), "--out",
                                 str(tmp_path / "s"), "--strict"], capture_output=True, text=True)
    assert p.returncode == 2 and ".flac" in p.stderr and "Traceback" not in p.stderr


def test_an_out_that_would_delete_the_source_or_a_foreign_folder_is_refused(libri, tmp_path):
    root, _ = libri
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for out, why in ((root, "is the source"), (root / "corpus", "lies inside the source"),
                     (tmp_path, "contains the source")):
        with pytest.raises(CorpusImportError, match=why):
            import_librispeech(root, out, force=True)
    # the CLI says the same, and the audio is all still there
    p = subprocess.run(ASRLAB + ["corpus", "import", "librispeech", str(root), "--out", str(root),
                                 "--force"], capture_output=True, text=True)
    assert p.returncode != 0 and "would delete the audio" in p.stderr + p.stdout
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    # --force replaces a corpus the lab wrote, never a folder it did not
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(CorpusImportError, match="replaces only a corpus the lab wrote"):
        import_librispeech(root, foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "ls"
    import_librispeech(root, out)
    import_librispeech(root, out, force=True)  # a lab corpus: replaced
    assert corpus_info(out)["splits"]["train"]["utterances"] > 0


def test_broken_files_are_named_with_their_line(libri, tiny, tmp_path):
    root, _ = libri
    trans = sorted(root.rglob("*.trans.txt"))[0]
    lines = trans.read_bytes().splitlines(keepends=True)
    trans.write_bytes(b"".join(lines[:1] + [b"1-2-3 CAF\xe9\n"] + lines[1:]))
    with pytest.raises(CorpusImportError, match=rf"{trans.name}:2: not UTF-8 text \(byte 0xe9\)"):
        import_librispeech(root, tmp_path / "ls")
    # a lhotse recordings manifest with a malformed third line
    src = tmp_path / "lh"
    _copy_manifests(tiny, src)
    rec = next(src.glob("*recordings*train*"))
    with gzip.open(rec, "rt") as f:
        rows = f.read().splitlines()
    rows[2] = rows[2][:40]
    with gzip.open(rec, "wt") as f:
        f.write("\n".join(rows) + "\n")
    with pytest.raises(CorpusImportError, match=rf"{rec.name}:3: not a JSON line"):
        import_lhotse(src, tmp_path / "out1")
    # and a truncated .gz
    data = gzip.compress(("\n".join(rows[:2] * 200) + "\n").encode())
    rec.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusImportError, match=rf"{rec.name}: a damaged or truncated gzip"):
        import_lhotse(src, tmp_path / "out2")
    p = subprocess.run(ASRLAB + ["corpus", "import", "lhotse", str(src), "--out",
                                 str(tmp_path / "out3")], capture_output=True, text=True)
    assert p.returncode != 0 and "truncated gzip" in p.stderr and "Aborted" not in p.stderr
