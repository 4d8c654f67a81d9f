"""Shared fixtures: one tiny real corpus per test session (engine.testing builds it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import testing

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The tiny synthesized corpus (about 200 real espeak-ng/flite utterances)."""
    return testing.tiny_corpus(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_tok(tiny):
    return testing.tiny_tokenizer(tiny)
