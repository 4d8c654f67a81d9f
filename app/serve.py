"""Starting and stopping the explorer (``asrlab ui``): in the foreground, or detached in the
background (``make demo`` leaves it running and prints its URL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"


def command(port: int, host: str) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]


def url(host: str, port: int) -> str:
    return f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"


def healthy(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:"
                                    f"{port}/_stcore/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _info_file(home: Path) -> Path:
    return Path(home) / "ui.json"


def free_port(host: str) -> int:
    """A port nothing listens on now (``--port 0``): the explorer is started on it, so the port
    it serves on is known from the start."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1" if host == "0.0.0.0" else host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _ours(pid: int) -> bool:
    """The process ``pid`` is an explorer (streamlit running this app)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"streamlit_app.py") for part in cmd)


def running(home: Path) -> dict | None:
    f = _info_file(home)
    try:
        info = json.loads(f.read_text())
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return info if healthy(info["host"], info["port"]) else None


def start_background(home: Path, port: int, host: str, timeout: float = 60.0) -> dict:
    """The explorer as a detached process serving ``home``; returns its pid and URL (an
    explorer already serving this lab is reused). Its pid and port are written to ``ui.json``
    before it is waited for, so ``asrlab ui --stop`` finds it even if this process ends first."""
    if (info := running(home)) is not None:
        return info
    if port == 0:
        port = free_port(host)
    elif healthy(host, port) or port_in_use(host, port):
        raise RuntimeError(f"port {port} is already in use; pass another --port (0: any free one)")
    log = open(Path(home) / "ui.log", "a")
    proc = subprocess.Popen(command(port, host), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=os.getcwd(), start_new_session=True,
                            env={**os.environ, "ASRLAB_HOME": str(Path(home).resolve())})
    info = {"pid": proc.pid, "host": host, "port": port, "url": url(host, port)}
    _info_file(home).write_text(json.dumps(info))
    deadline = time.monotonic() + timeout
    while not healthy(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill(proc.pid)
            _info_file(home).unlink(missing_ok=True)
            raise RuntimeError(f"the explorer did not start; see {Path(home) / 'ui.log'}")
        time.sleep(0.3)
    return info


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def stop(home: Path) -> bool:
    """Stop the background explorer of ``home``, serving or still starting."""
    try:
        info = json.loads(_info_file(home).read_text())
    except (OSError, ValueError):
        return False
    _info_file(home).unlink(missing_ok=True)
    if not _ours(int(info.get("pid", 0))):
        return False
    _kill(info["pid"])
    return True
