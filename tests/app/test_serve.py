"""`asrlab ui`: the port and pid of a background explorer are known from the start, so `--stop`
finds it even when the command that started it was killed while waiting; bad ports are refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

ASRLAB = [sys.executable, "-m", "engine.cli"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    return st != "Z"


def test_a_background_explorer_started_on_any_port_is_found_by_stop(tmp_path):
    env = {**os.environ, "ASRLAB_HOME": str(tmp_path / "lab")}
    cli = subprocess.Popen(ASRLAB + ["ui", "--background", "--port", "0"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info_file = tmp_path / "lab" / "ui.json"
    deadline = time.monotonic() + 60
    while not info_file.exists():  # written as soon as the explorer process exists
        assert cli.poll() is None or info_file.exists(), cli.stderr.read()
        assert time.monotonic() < deadline, "ui.json never appeared"
        time.sleep(0.05)
    cli.kill()  # the command dies (maybe while it waits for the server): nothing is orphaned
    cli.wait()
    info = json.loads(info_file.read_text())
    assert info["port"] > 0 and _alive(info["pid"])
    p = subprocess.run(ASRLAB + ["ui", "--stop"], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and "explorer stopped" in p.stdout, p.stdout + p.stderr
    deadline = time.monotonic() + 30
    while _alive(info["pid"]):
        assert time.monotonic() < deadline, "the explorer is still running after --stop"
        time.sleep(0.1)


def test_bad_and_busy_ports_are_refused(tmp_path):
    env = {**os.environ, "ASRLAB_HOME": str(tmp_path / "lab")}
    p = subprocess.run(ASRLAB + ["ui", "--port", "99999"], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "--port" in p.stderr and "65535" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (["--port", str(port)], ["--background", "--port", str(port)]):
            p = subprocess.run(ASRLAB + ["ui", *args], env=env, capture_output=True, text=True,
                               timeout=60)
            assert p.returncode != 0 and f"port {port} is already in use" in p.stderr, p.stderr
            assert "explorer: http" not in p.stdout  # it never said it serves
