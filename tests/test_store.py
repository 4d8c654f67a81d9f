"""The store's readers: a read that meets the writer half-way is read again, not raised."""

from __future__ import annotations

import duckdb
import pytest

from engine import store


def test_a_torn_read_is_read_again_from_a_fresh_connection(tmp_path, monkeypatch):
    path = tmp_path / "lab.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2)")
    con.close()
    real, calls = duckdb.connect, []

    class Torn:  # what a reader saw once in CI while the supervisor extended the file
        def execute(self, *a):
            raise duckdb.IOException(f'IO Error: Could not read enough bytes from file "{path}": '
                                     f'attempted to read 262144 bytes from location 4206592')

        def close(self):
            pass

    def connect(*a, **k):
        calls.append(1)
        return Torn() if len(calls) == 1 else real(*a, **k)

    monkeypatch.setattr(store.duckdb, "connect", connect)
    assert store.read(path, "SELECT x FROM t ORDER BY x") == [{"x": 1}, {"x": 2}]
    assert len(calls) == 2
    # any other IO error still says what it is
    calls.clear()

    class Broken(Torn):
        def execute(self, *a):
            raise duckdb.IOException("IO Error: No space left on device")

    monkeypatch.setattr(store.duckdb, "connect", lambda *a, **k: Broken())
    with pytest.raises(duckdb.IOException, match="No space left"):
        store.read(path, "SELECT x FROM t")
