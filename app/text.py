"""Word-level alignment of a hypothesis against its reference, rendered as HTML."""

from __future__ import annotations

import html

import jiwer


def word_diff(reference: str, hypothesis: str) -> list[tuple[str, str, str]]:
    """``[(op, ref_words, hyp_words)]`` with op in equal, substitute, delete, insert."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return [("insert", "", " ".join(hyp))] if hyp else []
    if not hyp:
        return [("delete", " ".join(ref), "")]
    out = []
    for c in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        out.append((c.type, " ".join(ref[c.ref_start_idx:c.ref_end_idx]),
                    " ".join(hyp[c.hyp_start_idx:c.hyp_end_idx])))
    return out


STYLE = {"substitute": "background:#fde2b3", "delete": "background:#f8c4c4;text-decoration:"
         "line-through", "insert": "background:#c9e7c9"}


def diff_html(reference: str, hypothesis: str) -> str:
    """The hypothesis with its errors marked: substitutions as hyp word with the reference word
    struck after it, deletions as the struck reference word, insertions green."""
    parts = []
    for op, r, h in word_diff(reference, hypothesis):
        r, h = html.escape(r), html.escape(h)
        if op == "equal":
            parts.append(h)
        elif op == "substitute":
            parts.append(f'<span style="{STYLE[op]}" title="was: {r}">{h}</span>'
                         f'<sub style="color:#a33"><s>{r}</s></sub>')
        elif op == "delete":
            parts.append(f'<span style="{STYLE[op]}" title="deleted">{r}</span>')
        else:
            parts.append(f'<span style="{STYLE[op]}" title="inserted">+{h}</span>')
    return " ".join(parts) or "<i>(empty)</i>"
