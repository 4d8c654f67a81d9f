"""sentencepiece tokenizer trained on the train transcripts, with blank at id 0.

Ids follow icefall (and so sherpa-onnx): ``<blk>`` is 0, ``<sos/eos>`` is 1, ``<unk>`` is 2, then
the pieces. ``tokens.txt`` holds one ``symbol id`` per line in id order, the file sherpa-onnx reads.
Stored under ``CORPUS/tokenizer/{model_type}{vocab_size}/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from engine.data.corpus import atomic_dir

BLANK, SOS_EOS, UNK = "<blk>", "<sos/eos>", "<unk>"
UNK_ID = 2
MODEL_TYPES = ("unigram", "bpe")


def tokenizer_dir(corpus: Path, vocab_size: int, model_type: str = "unigram") -> Path:
    return Path(corpus) / "tokenizer" / f"{model_type}{vocab_size}"


class Tokenizer:
    """A trained sentencepiece model with the blank convention above."""

    def __init__(self, path: Path | None = None, proto: bytes | None = None) -> None:
        if proto is not None:
            self.path = None
            self.sp = spm.SentencePieceProcessor(model_proto=proto)
        else:
            path = Path(path)
            model = path / "tokenizer.model" if path.is_dir() else path
            if not model.exists():
                raise FileNotFoundError(f"{model}: no tokenizer here; train one with "
                                        f"`asrlab corpus tokenizer CORPUS --vocab-size N`")
            self.path = model.parent
            self.sp = spm.SentencePieceProcessor(model_file=str(model))
        assert self.sp.id_to_piece(0) == BLANK, self.sp.id_to_piece(0)
        self.blank_id = 0
        self.unk_id = self.sp.unk_id()

    def proto(self) -> bytes:
        """The serialized model: model files embed it, so they decode to text on their own."""
        return self.sp.serialized_model_proto()

    def tokens_txt(self) -> str:
        """sherpa-onnx / icefall ``tokens.txt``: one ``symbol id`` per line, in id order."""
        return "".join(f"{self.sp.id_to_piece(i)} {i}\n" for i in range(self.vocab_size))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i > UNK_ID])

    def tokens_per_word(self, texts: list[str]) -> float:
        words = sum(len(t.split()) for t in texts)
        return sum(len(ids) for ids in self.encode_batch(texts)) / max(words, 1)



@dataclass(frozen=True)
class TokenizerReport:
    path: str
    vocab_size: int
    model_type: str
    tokens_per_word: float
    sentences: int


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int = 256,
                    model_type: str = "unigram") -> TokenizerReport:
    """Train on ``texts`` and write ``tokenizer.model``, ``tokens.txt`` and ``settings.json``."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown tokenizer model type {model_type!r}; expected {MODEL_TYPES}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no non-empty transcripts to train a tokenizer on")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, keep_existing=True) as work:
        (work / "text.txt").write_text("\n".join(texts) + "\n")
        spm.SentencePieceTrainer.train(
            input=str(work / "text.txt"), model_prefix=str(work / "tokenizer"),
            vocab_size=vocab_size, model_type=model_type, character_coverage=1.0,
            user_defined_symbols=[BLANK, SOS_EOS], unk_id=UNK_ID, bos_id=-1, eos_id=-1,
            input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
            num_threads=os.cpu_count() or 1)
        (work / "text.txt").unlink()
        tok = Tokenizer(work)
        (work / "tokens.txt").write_text(tok.tokens_txt())
        report = TokenizerReport(str(out_dir), tok.vocab_size, model_type,
                                 round(tok.tokens_per_word(texts), 3), len(texts))
        (work / "settings.json").write_text(json.dumps(report.__dict__, indent=2) + "\n")
    return report
