"""The lab's store: one DuckDB file, one writer, short-lived readers.

Facts that decide this design (measured on this project's machines): while any process holds a read-write
connection nobody else can open the file, read-only included, and while any process holds a
read-only connection nobody can open it read-write; there is no busy timeout. So:

- only the supervisor writes (``Writer``), in batches, and closes the file between flushes;
- readers (CLI, explorer) open read-only for one query at a time (``read``), retrying with
  backoff while the writer holds the file;
- every batch of events is committed in the same transaction as the spool offsets it came
  from, so each event is ingested exactly once even when the supervisor is killed mid-flush.

The schema has a version number; ``MIGRATIONS[n]`` turns version n-1 into n.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Iterable

import duckdb
import numpy as np

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE schema_version (version INTEGER)",
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, name VARCHAR, experiment VARCHAR, sweep_id VARCHAR,
            config VARCHAR, config_hash VARCHAR, git_rev VARCHAR, versions VARCHAR,
            host VARCHAR, seed BIGINT, executor VARCHAR, run_dir VARCHAR, created DOUBLE)""",
        """CREATE TABLE stages (
            run_id VARCHAR, name VARCHAR, kind VARCHAR, position INTEGER, deps VARCHAR,
            stage_hash VARCHAR, state VARCHAR, progress DOUBLE, pid INTEGER, attempt INTEGER,
            started DOUBLE, ended DOUBLE, error VARCHAR, outputs VARCHAR, last_metrics VARCHAR,
            reused_from VARCHAR, updated DOUBLE, PRIMARY KEY (run_id, name))""",
        """CREATE TABLE metrics (
            run_id VARCHAR, stage VARCHAR, step INTEGER, ts DOUBLE, data VARCHAR,
            PRIMARY KEY (run_id, stage, step))""",
        """CREATE TABLE evals (
            run_id VARCHAR, stage VARCHAR, split VARCHAR, decoding VARCHAR, model VARCHAR,
            wer DOUBLE, wer_lo DOUBLE, wer_hi DOUBLE, utterances INTEGER, params BIGINT,
            nonzero_params BIGINT, bytes BIGINT, macs_per_second DOUBLE, rtf DOUBLE,
            summary VARCHAR, ts DOUBLE, PRIMARY KEY (run_id, stage, split))""",
        """CREATE TABLE hyps (
            run_id VARCHAR, stage VARCHAR, split VARCHAR, cut_id VARCHAR, reference VARCHAR,
            hypothesis VARCHAR, ref_words INTEGER, substitutions INTEGER, deletions INTEGER,
            insertions INTEGER, PRIMARY KEY (run_id, stage, split, cut_id))""",
        """CREATE TABLE artifacts (
            run_id VARCHAR, stage VARCHAR, kind VARCHAR, path VARCHAR, bytes BIGINT,
            PRIMARY KEY (run_id, stage, kind))""",
        """CREATE TABLE logs (
            run_id VARCHAR, stage VARCHAR, source VARCHAR, offset_ BIGINT, ts DOUBLE,
            line VARCHAR, PRIMARY KEY (source, offset_))""",
        """CREATE TABLE spool_offsets (source VARCHAR PRIMARY KEY, offset_ BIGINT, events BIGINT)""",
        """CREATE TABLE ingest_errors (
            source VARCHAR, offset_ BIGINT, error VARCHAR, ts DOUBLE, PRIMARY KEY (source, offset_))""",
    ],
    # A model is evaluated at several training steps (periodic dev evaluations, the final
    # evaluate stage), so the explorer can compare the final, the best-on-dev or the step-N
    # evaluation: evals and hyps gain the step and the stage whose weights were evaluated, hyps
    # gain where the audio lies (the Listen page plays it).
    2: [
        """CREATE TABLE evals_v2 (
            run_id VARCHAR, stage VARCHAR, split VARCHAR, step BIGINT, model_stage VARCHAR,
            decoding VARCHAR, model VARCHAR, wer DOUBLE, wer_lo DOUBLE, wer_hi DOUBLE,
            utterances INTEGER, params BIGINT, nonzero_params BIGINT, bytes BIGINT,
            macs_per_second DOUBLE, rtf DOUBLE, summary VARCHAR, ts DOUBLE,
            PRIMARY KEY (run_id, stage, split, step))""",
        """INSERT INTO evals_v2 SELECT run_id, stage, split, 0, NULL, decoding, model, wer, wer_lo,
            wer_hi, utterances, params, nonzero_params, bytes, macs_per_second, rtf, summary, ts
            FROM evals""",
        "DROP TABLE evals",
        "ALTER TABLE evals_v2 RENAME TO evals",
        # an evaluate stage evaluated the weights of the stage its config names
        """UPDATE evals e SET model_stage = (
            SELECT json_extract_string(s.value, '$.model') FROM runs r,
                   json_each(r.config, '$.stages') s
            WHERE r.run_id = e.run_id AND json_extract_string(s.value, '$.name') = e.stage
            LIMIT 1)""",
        """CREATE TABLE hyps_v2 (
            run_id VARCHAR, stage VARCHAR, split VARCHAR, step BIGINT, cut_id VARCHAR,
            reference VARCHAR, hypothesis VARCHAR, ref_words INTEGER, substitutions INTEGER,
            deletions INTEGER, insertions INTEGER, audio VARCHAR, start DOUBLE, duration DOUBLE,
            PRIMARY KEY (run_id, stage, split, step, cut_id))""",
        """INSERT INTO hyps_v2 SELECT run_id, stage, split, 0, cut_id, reference, hypothesis,
            ref_words, substitutions, deletions, insertions, NULL, NULL, NULL FROM hyps""",
        "DROP TABLE hyps",
        "ALTER TABLE hyps_v2 RENAME TO hyps",
    ],
    # Pruning stages log their masks while they train and at the end: per encoder block (-1:
    # outside the encoder), module and unit kind (module, heads, units, channels, weights), the
    # kept fraction and, for structured gates, each unit's kept flag and gate probability.
    3: [
        """CREATE TABLE masks (
            run_id VARCHAR, stage VARCHAR, step BIGINT, block INTEGER, module VARCHAR,
            unit VARCHAR, size BIGINT, kept_fraction DOUBLE, kept VARCHAR, prob VARCHAR,
            ts DOUBLE, PRIMARY KEY (run_id, stage, step, block, module, unit))""",
    ],
    # A two-pass model's evaluation keeps, per utterance, the first pass's n-best with its RNN-T
    # and LAS scores and which hypothesis the rescorer chose (JSON).
    4: ["ALTER TABLE hyps ADD COLUMN nbest VARCHAR"],
    # Which runtime scored an evaluation: torch, torch-int8, sherpa-onnx, sherpa-onnx-int8,
    # onnxruntime(-int8). NULL (earlier rows) is torch.
    5: ["ALTER TABLE evals ADD COLUMN runtime VARCHAR"],
}

# column order of each event table, as the writer fills them
TABLES: dict[str, tuple[str, ...]] = {
    "metrics": ("run_id", "stage", "step", "ts", "data"),
    "evals": ("run_id", "stage", "split", "step", "model_stage", "decoding", "model", "wer", "wer_lo", "wer_hi",
              "utterances", "params", "nonzero_params", "bytes", "macs_per_second", "rtf",
              "summary", "ts", "runtime"),
    "hyps": ("run_id", "stage", "split", "step", "cut_id", "reference", "hypothesis", "ref_words",
             "substitutions", "deletions", "insertions", "audio", "start", "duration", "nbest"),
    "artifacts": ("run_id", "stage", "kind", "path", "bytes"),
    "masks": ("run_id", "stage", "step", "block", "module", "unit", "size", "kept_fraction",
              "kept", "prob", "ts"),
    "logs": ("run_id", "stage", "source", "offset_", "ts", "line"),
    "ingest_errors": ("source", "offset_", "error", "ts"),
    "runs": ("run_id", "name", "experiment", "sweep_id", "config", "config_hash", "git_rev",
             "versions", "host", "seed", "executor", "run_dir", "created"),
    "stages": ("run_id", "name", "kind", "position", "deps", "stage_hash", "state", "progress",
               "pid", "attempt", "started", "ended", "error", "outputs", "last_metrics",
               "reused_from", "updated"),
}
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "metrics": ("run_id", "stage", "step"), "evals": ("run_id", "stage", "split", "step"),
    "hyps": ("run_id", "stage", "split", "step", "cut_id"), "artifacts": ("run_id", "stage", "kind"),
    "masks": ("run_id", "stage", "step", "block", "module", "unit"), "logs": ("source", "offset_"), "ingest_errors": ("source", "offset_"), "runs": ("run_id",),
    "stages": ("run_id", "name"),
}
_NUMPY = {"step": np.int64, "ts": np.float64, "wer": np.float64, "wer_lo": np.float64,
          "wer_hi": np.float64, "utterances": np.int64, "params": np.int64,
          "nonzero_params": np.int64, "bytes": np.int64, "macs_per_second": np.float64,
          "rtf": np.float64, "ref_words": np.int64, "substitutions": np.int64,
          "deletions": np.int64, "insertions": np.int64, "offset_": np.int64,
          "start": np.float64, "duration": np.float64, "block": np.int64, "size": np.int64,
          "kept_fraction": np.float64}


def is_lock_error(e: Exception) -> bool:
    return "lock" in str(e).lower()


def _torn(e: Exception) -> bool:
    """A read that found the file shorter than its header says: the writer was extending it."""
    return "could not read enough bytes" in str(e).lower()


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    have = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}
    version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0] \
        if "schema_version" in have else 0
    if version is not None and version > SCHEMA_VERSION:
        raise RuntimeError(f"the store's schema is version {version}, newer than this lab's "
                           f"{SCHEMA_VERSION}: update the lab")
    for v in range((version or 0) + 1, SCHEMA_VERSION + 1):
        con.execute("BEGIN")
        for sql in MIGRATIONS[v]:
            con.execute(sql)
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version VALUES (?)", [v])
        con.execute("COMMIT")


class Writer:
    """The single writer. ``flush`` opens the file, writes one transaction, closes it.

    Rows wait in memory between flushes. A flush that finds the file held by a reader raises
    ``duckdb.IOException``; the caller keeps the rows and tries again later, so nothing is lost.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.pending: dict[str, list[tuple]] = {t: [] for t in TABLES}
        self.offsets: dict[str, tuple[int, int]] = {}
        with self._connect() as con:
            _migrate(con)

    def _connect(self, timeout: float = 30.0) -> duckdb.DuckDBPyConnection:
        """Open for writing, waiting (with backoff) while a reader holds the file."""
        deadline, delay = time.monotonic() + timeout, 0.02
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.Error as e:
                if not is_lock_error(e) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.pending[table].append(tuple(row.get(c) for c in TABLES[table]))

    def set_offset(self, source: str, offset: int, events: int) -> None:
        """Where ingestion of ``source`` stands, and how many lines it has taken in all (so a
        test can tell an event ingested twice from one ingested once)."""
        self.offsets[source] = (offset, events)

    def has_pending(self) -> bool:
        return bool(self.offsets) or any(self.pending.values())

    def load_offsets(self) -> dict[str, tuple[int, int]]:
        with self._connect() as con:
            return {s: (o, n or 0) for s, o, n in con.execute(
                "SELECT source, offset_, events FROM spool_offsets").fetchall()}

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self._connect() as con:
            return con.execute(sql, params or []).fetchall()

    def flush(self) -> int:
        """Write everything pending in one transaction; returns the number of rows written."""
        if not self.has_pending():
            return 0
        n = 0
        con = duckdb.connect(str(self.path))  # no waiting here: the caller backs off
        try:
            con.execute("BEGIN")
            for table, rows in self.pending.items():
                if not rows:
                    continue
                cols = TABLES[table]
                # last write wins within a batch, as it does across batches (INSERT OR REPLACE
                # refuses a key twice in one statement)
                rows = _dedupe(rows, [cols.index(c) for c in PRIMARY_KEYS[table]])
                data = {c: _column([r[i] for r in rows], c) for i, c in enumerate(cols)}
                con.register("batch_rows", data)
                con.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
                            f"SELECT {', '.join(cols)} FROM batch_rows")
                con.unregister("batch_rows")
                n += len(rows)
            if self.offsets:
                con.register("batch_rows", {
                    "source": np.array(list(self.offsets), dtype=object),
                    "offset_": np.array([o for o, _ in self.offsets.values()], dtype=np.int64),
                    "events": np.array([n for _, n in self.offsets.values()], dtype=np.int64)})
                con.execute("INSERT OR REPLACE INTO spool_offsets SELECT source, offset_, events "
                            "FROM batch_rows")
            con.execute("COMMIT")
        finally:
            con.close()
        self.pending = {t: [] for t in TABLES}
        self.offsets = {}
        return n


def _column(values: list, name: str) -> np.ndarray:
    dtype = _NUMPY.get(name)
    if dtype is not None and all(v is not None for v in values):
        return np.array(values, dtype=dtype)
    return np.array(values, dtype=object)


def _dedupe(rows: list[tuple], key: Iterable[int]) -> list[tuple]:
    seen: dict[tuple, tuple] = {}
    for r in rows:
        seen[tuple(r[i] for i in key)] = r
    return list(seen.values())


def migrate(path: Path) -> None:
    """Bring an existing store up to this lab's schema (readers never write, so a reader that
    starts before the supervisor, such as the explorer, calls this first)."""
    if Path(path).exists():
        Writer(path)


# ----- readers ----------------------------------------------------------------------------------
def read(path: Path, sql: str, params: list | None = None, timeout: float = 10.0
         ) -> list[dict]:
    """One query on a short-lived read-only connection, retried with backoff while the writer
    holds the file. A store that does not exist yet reads as empty."""
    path = Path(path)
    if not path.exists():
        return []
    deadline, delay = time.monotonic() + timeout, 0.02
    while True:
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as e:
            if not (is_lock_error(e) or _torn(e)) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
            continue
        try:
            cur = con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
        except duckdb.CatalogException:
            return []  # created but not yet migrated
        except duckdb.IOException as e:
            # a torn read of a file the writer was extending (seen once in CI): the reader
            # holds nothing, so read again from a fresh connection
            if not _torn(e) or time.monotonic() > deadline:
                raise
        finally:
            con.close()
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.5)


def loads(value: str | None, default=None):
    return json.loads(value) if value else default
