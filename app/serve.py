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
    explorer already serving this lab is reused)."""
    if (info := running(home)) is not None:
        return info
    if healthy(host, port):
        raise RuntimeError(f"port {port} is already serving something else; pass --port")
    log = open(Path(home) / "ui.log", "a")
    proc = subprocess.Popen(command(port, host), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=os.getcwd(), start_new_session=True,
                            env={**os.environ, "ASRLAB_HOME": str(Path(home).resolve())})
    deadline = time.monotonic() + timeout
    while not healthy(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the explorer did not start; see {Path(home) / 'ui.log'}")
        time.sleep(0.3)
    info = {"pid": proc.pid, "host": host, "port": port, "url": url(host, port)}
    _info_file(home).write_text(json.dumps(info))
    return info


def stop(home: Path) -> bool:
    info = running(home)
    if info is None:
        return False
    os.killpg(info["pid"], signal.SIGTERM)
    _info_file(home).unlink(missing_ok=True)
    return True
