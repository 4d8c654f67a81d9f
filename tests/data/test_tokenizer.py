import pytest

from engine.data.corpus import load_supervisions
from engine.data.tokenizer import Tokenizer, train_tokenizer


def test_blank_is_zero_and_tokens_txt_is_sherpa_format(tiny_tok):
    lines = (tiny_tok.path / "tokens.txt").read_text().splitlines()
    assert lines[0] == "<blk> 0" and lines[1] == "<sos/eos> 1" and lines[2] == "<unk> 2"
    assert len(lines) == tiny_tok.vocab_size == 64
    for i, line in enumerate(lines):
        sym, idx = line.rsplit(" ", 1)
        assert int(idx) == i and sym


def test_round_trip_and_no_blank_in_encodings(tiny, tiny_tok):
    for s in list(load_supervisions(tiny, "test-clean"))[:10]:
        ids = tiny_tok.encode(s.text)
        assert 0 not in ids and 1 not in ids
        assert tiny_tok.decode(ids) == s.text


def test_tokens_per_word_falls_with_vocabulary(tiny, tmp_path):
    texts = [s.text for s in load_supervisions(tiny, "train")]
    small = train_tokenizer(texts, tmp_path / "a", 48)
    large = train_tokenizer(texts, tmp_path / "b", 200)
    assert large.tokens_per_word < small.tokens_per_word


def test_failed_training_leaves_nothing(tiny, tmp_path):
    with pytest.raises(ValueError):
        train_tokenizer(["", "  "], tmp_path / "t", 64)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        Tokenizer(tmp_path / "t")
    assert list(tmp_path.iterdir()) == []
