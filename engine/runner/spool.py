"""Append-only event spools: how a stage worker reports without touching the store.

A worker appends one JSON object per line to ``RUN_DIR/spool/STAGE.jsonl`` and flushes after
every line. The supervisor reads each spool from the byte offset it last committed, takes whole
lines only (a line still being written waits for the next pass), and commits the events and the
new offset in one transaction: an event is ingested exactly once, whoever dies when.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterator


class SpoolWriter:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def emit(self, type_: str, **data) -> None:
        line = json.dumps({"type": type_, "ts": time.time(), **data}, default=_plain)
        self._f.write(line + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _plain(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to a spool")


def read_new(path: Path, offset: int, max_bytes: int = 64 << 20
             ) -> Iterator[tuple[int, int, dict | None, str | None]]:
    """Whole lines after ``offset``: ``(line_offset, next_offset, event or None, error or
    None)``. A malformed line yields an error (and is skipped), never an exception."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    if size <= offset:
        return
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(min(size - offset, max_bytes))
    pos = 0
    while True:
        nl = chunk.find(b"\n", pos)
        if nl < 0:
            return  # an unfinished last line waits for the next pass
        raw = chunk[pos:nl]
        start, pos = offset + pos, nl + 1
        try:
            ev = json.loads(raw)
            if not isinstance(ev, dict) or "type" not in ev:
                raise ValueError("not an event object with a 'type'")
            yield start, offset + pos, ev, None
        except ValueError as e:
            text = raw[:120].decode("utf-8", "replace")
            yield start, offset + pos, None, f"{path}: byte {start}: malformed spool line " \
                                             f"({e}): {text!r}"
