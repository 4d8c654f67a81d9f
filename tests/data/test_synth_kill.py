"""A synthesis killed part-way (the whole command, or one worker) loses nothing it finished."""

import json
import os
import signal
import subprocess
import sys
import time

ASRLAB = [sys.executable, "-m", "engine.cli"]


def _start(out):
    return subprocess.Popen(ASRLAB + ["corpus", "synth", "--size", "tiny", "--out", str(out),
                                      "--jobs", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_files(out, n, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = list((out / "audio").glob("*/*.flac")) if (out / "audio").exists() else []
        if len([p for p in done if not p.name.endswith(".tmp.flac")]) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("synthesis made no progress")


def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killed_command_resumes(tmp_path):
    out = tmp_path / "c"
    proc = _start(out)
    _wait_for_files(out, 20, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "audio").glob("*/*.flac")
                if not p.name.endswith(".tmp.flac")}
    info = subprocess.run(ASRLAB + ["corpus", "info", str(out)], capture_output=True, text=True)
    assert info.returncode == 2 and "incomplete" in info.stderr
    done = subprocess.run(ASRLAB + ["corpus", "synth", "--size", "tiny", "--out", str(out),
                                    "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "audio").glob("*/*.flac")}
    assert all(kept[name] == t for name, t in finished.items())  # nothing redone
    assert len(kept) == 200 and not list((out / "audio").glob("*/*.tmp.flac"))
    data = json.loads(subprocess.run(ASRLAB + ["corpus", "info", str(out), "--json"],
                                     capture_output=True, text=True).stdout)
    assert sum(s["utterances"] for s in data["splits"].values()) == 200


def test_killed_worker_fails_clearly_then_resumes(tmp_path):
    out = tmp_path / "w"
    proc = _start(out)
    _wait_for_files(out, 10, proc)
    workers = _children(proc.pid)
    assert workers, "no worker process found"
    for w in workers:
        try:
            os.kill(w, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "worker died" in err and "rerun" in err and "Traceback" not in err
    done = subprocess.run(ASRLAB + ["corpus", "synth", "--size", "tiny", "--out", str(out),
                                    "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
