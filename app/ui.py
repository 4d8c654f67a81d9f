"""Small helpers the pages share: where the lab is, and page state kept in the URL."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.stages import lab_home


def home() -> Path:
    return lab_home()


def param(name: str, default: str | None = None) -> str | None:
    return st.query_params.get(name, default)


def int_param(name: str, default: int) -> int:
    """A whole-number URL parameter; anything else (``?step=abc``) is the default, with a note."""
    raw = param(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        st.caption(f"Ignored `{name}={raw}` in the link: not a whole number.")
        return default


def param_list(name: str) -> list[str]:
    return [v for v in st.query_params.get_all(name) if v]


def set_params(**values) -> None:
    """Write page state into the URL (a list becomes a repeated key; None removes the key) so
    the view can be shared as a link."""
    for k, v in values.items():
        if v is None or v == [] or v == "":
            if k in st.query_params:
                del st.query_params[k]
        elif isinstance(v, (list, tuple)):
            if st.query_params.get_all(k) != [str(x) for x in v]:
                st.query_params[k] = [str(x) for x in v]
        elif st.query_params.get(k) != str(v):
            st.query_params[k] = str(v)


def pick(options: list, wanted, fallback: int = 0) -> int:
    """Index of ``wanted`` in ``options`` (for a widget's ``index``), else ``fallback``."""
    try:
        return options.index(wanted)
    except ValueError:
        return fallback if options else 0


def human_bytes(n) -> str:
    if n is None or n != n:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000.0
    return str(n)


def no_store_yet() -> None:
    st.info("Nothing evaluated yet. Launch a run (Launch page, or `asrlab run "
            "experiments/tiny.toml`), and its results appear here as the engine records them.")


def seed(key: str, options: list, wanted, fallback=None):
    """Give widget ``key`` its first value from the URL (``wanted``) once, and again whenever
    its value is no longer among ``options``; the widget is then created without an index, so
    Streamlit keeps the user's choice across reruns."""
    valid = wanted if wanted in options else (fallback if fallback in options else
                                              (options[0] if options else None))
    if key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = valid


def seed_many(key: str, options: list, wanted: list) -> None:
    if key not in st.session_state:
        st.session_state[key] = [w for w in wanted if w in options]
    else:
        st.session_state[key] = [w for w in st.session_state[key] if w in options]


def evaluated_on_a_split(home: Path):
    """The split picker of the pages that look at per-utterance results: (split, its evaluated
    models as a DataFrame, {model id: label with its WER}); stops the page when nothing is
    evaluated yet."""
    from app import data

    ev = data.evaluated(home)
    if ev.empty:
        no_store_yet()
        st.stop()
    splits = sorted(set(ev["split"]))
    seed("split", splits, param("split"), "test-clean")
    split = st.selectbox("Split", splits, key="split")
    ev = ev[ev["split"] == split]
    labels = dict(zip(ev["model"], ev["label"] + " — WER " + ev["wer"].map("{:.2f}".format)))
    return split, ev, labels
