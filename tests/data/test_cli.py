import json
import subprocess
import sys

ASRLAB = [sys.executable, "-m", "engine.cli"]


def run(*args):
    return subprocess.run(ASRLAB + list(args), capture_output=True, text=True)


def test_corpus_info_json_contract(tiny):
    p = run("corpus", "info", str(tiny), "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert set(data["splits"]) == {"train", "dev", "test-clean", "test-other"}
    for split, s in data["splits"].items():
        for key in ("utterances", "hours", "voices", "words", "sentence_overlap_with_train",
                    "voice_overlap_with_train"):
            assert key in s, (split, key)
    assert data["splits"]["test-other"]["voice_overlap_with_train"] == 0
    assert all(data["splits"][s]["sentence_overlap_with_train"] == 0
               for s in ("dev", "test-clean", "test-other"))


def test_corpus_info_table(tiny):
    p = run("corpus", "info", str(tiny))
    assert p.returncode == 0 and "test-other" in p.stdout


def test_synth_cli_with_progress_and_bad_size(tmp_path):
    p = run("corpus", "synth", "--size", "huge", "--out", str(tmp_path / "x"))
    assert p.returncode == 2 and "huge" in p.stderr and "Traceback" not in p.stderr


def test_clear_errors_for_bad_folders(tmp_path):
    p = run("corpus", "info", str(tmp_path))
    assert p.returncode == 2 and "corpus.json" in p.stderr
    (tmp_path / "corpus.json").write_text("{oops")
    p = run("corpus", "info", str(tmp_path))
    assert p.returncode == 2 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr


def test_tokenizer_cli_and_too_large_vocab(tiny, tmp_path):
    p = run("corpus", "tokenizer", str(tiny), "--vocab-size", "100000")
    assert p.returncode == 2 and "Vocabulary size too high" in p.stderr
    p = run("corpus", "tokenizer", str(tiny), "--vocab-size", "80", "--model-type", "bpe")
    assert p.returncode == 0, p.stderr
    assert "tokens per word" in p.stdout
    assert (tiny / "tokenizer" / "bpe80" / "tokens.txt").exists()
