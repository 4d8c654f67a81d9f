"""What the explorer asks the engine to do. Like the CLI it never writes the store: commands go
to the supervisor's queue folder (``engine.runner.client``)."""

from __future__ import annotations

from pathlib import Path

from engine.config import ConfigError
from engine.data.corpus import CorpusError
from engine.runner import client

# what a user can fix; the pages show these as one message, as the CLI prints them
USER_ERRORS = (ConfigError, CorpusError, client.EngineError, FileNotFoundError)


def submit(home: Path, data: dict, source: str, grids: list[str], executor: str = "local",
           address: str | None = None, storage: str | None = None) -> list[str]:
    """Queue a run (or one per grid combination) on the local pool or a Ray cluster; returns
    the run ids. Raises ConfigError."""
    return [r["run_id"] for r in client.submit(home, data, source, grids, executor,
                                               address=address,
                                               storage=Path(storage) if storage else None)]


def cancel(home: Path, run_id: str) -> None:
    client.status(home, run_id)  # names a run that exists
    client.start_supervisor(home)
    client.send(home, "cancel", run_id=run_id)


def resume(home: Path, run_id: str) -> None:
    client.status(home, run_id)
    client.start_supervisor(home)
    client.send(home, "resume", run_id=run_id)
