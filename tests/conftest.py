"""Shared fixtures: one tiny real corpus per test session (engine.testing builds it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import testing

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The tiny synthesized corpus (about 200 real espeak-ng/flite utterances), one per test
    session: `make test`'s parallel workers (pytest-xdist) share it, the first one makes it."""
    from engine.locks import file_lock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder above every worker's own
    with file_lock(root / "tiny.lock"):
        return testing.tiny_corpus(root / "tiny0")


@pytest.fixture(scope="session")
def tiny_tok(tiny):
    return testing.tiny_tokenizer(tiny)


@pytest.fixture(scope="session")
def tiny_run(tiny, tmp_path_factory):
    """experiments/tiny.toml run on the session's tiny corpus: {stage: outputs}, and its folder."""
    from engine.config import load_experiment, parse_experiment
    from engine.stages import run_experiment

    root = Path(__file__).resolve().parents[1]
    exp = load_experiment(root / "experiments" / "tiny.toml").model_dump()
    exp["data"]["corpus"] = str(tiny)
    out = tmp_path_factory.mktemp("tiny_run")
    outputs = run_experiment(parse_experiment(exp), out, progress=False, log=lambda s: None)
    return out, outputs
