"""Public testing helpers: tiny real data that every test suite of the lab (and its users' own
tests) can build on. Nothing here is mocked: the tiny corpus is real espeak-ng/flite speech.

- ``tiny_corpus(root)``: the ``tiny`` synthesized corpus (about 200 utterances, a few seconds to
  make), made once per folder and reused.
- ``tiny_tokenizer(corpus)``: a small sentencepiece tokenizer trained on its train split.
- ``make_librispeech_tree(corpus, dest, ...)``: a LibriSpeech-layout folder built from a corpus's
  FLAC files, optionally with the bad files real data has (corrupt audio, empty transcript, a
  wrong sample rate, a missing file).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.data.corpus import load_supervisions
from engine.data.synth import synthesize
from engine.data.tokenizer import Tokenizer, tokenizer_dir, train_tokenizer


def tiny_corpus(root: Path, seed: int = 0) -> Path:
    root = Path(root)
    if not (root / "corpus.json").exists() or '"complete": true' not in (
            root / "corpus.json").read_text():
        synthesize(root, size="tiny", seed=seed, progress=False)
    return root


def tiny_tokenizer(corpus: Path, vocab_size: int = 64) -> Tokenizer:
    from engine.locks import file_lock

    path = tokenizer_dir(corpus, vocab_size)
    with file_lock(Path(corpus) / ".prepare.lock"):  # test processes side by side share it
        if not (path / "tokenizer.model").exists():
            texts = [s.text for s in load_supervisions(corpus, "train")]
            train_tokenizer(texts, path, vocab_size)
    return Tokenizer(path)


def make_librispeech_tree(corpus: Path, dest: Path, per_split: int = 6,
                          with_bad_files: bool = False) -> dict[str, str]:
    """Copy some of ``corpus``'s utterances into LibriSpeech's layout under ``dest``.

    Subsets: train-clean-100 (from train), dev-clean (dev), test-other (test-other); speaker ids
    come from the voices, chapters are numbered. With ``with_bad_files`` the train subset also gets
    a corrupt FLAC, an empty transcript, an 8 kHz file and a transcript line whose audio is
    missing. Returns {problem: utterance id} for the planted problems.
    """
    dest = Path(dest)
    planted: dict[str, str] = {}
    for subset, split in (("train-clean-100", "train"), ("dev-clean", "dev"),
                          ("test-other", "test-other")):
        sups = list(load_supervisions(corpus, split))[:per_split]
        speakers = {s: 100 + i for i, s in enumerate(sorted({x.speaker for x in sups}))}
        by_chapter: dict[Path, list[str]] = {}
        for n, s in enumerate(sups):
            spk = speakers[s.speaker]
            chapter = dest / subset / str(spk) / "7"
            chapter.mkdir(parents=True, exist_ok=True)
            uid = f"{spk}-7-{n:04d}"
            src = Path(corpus) / "audio" / split / f"{s.recording_id}.flac"
            shutil.copy(src, chapter / f"{uid}.flac")
            by_chapter.setdefault(chapter, []).append(f"{uid} {s.text}")
        for chapter, lines in by_chapter.items():
            (chapter / f"{chapter.parent.name}-7.trans.txt").write_text("\n".join(lines) + "\n")
    if with_bad_files:
        chapter = sorted((dest / "train-clean-100").glob("*/7"))[0]
        spk = chapter.parent.name
        trans = chapter / f"{spk}-7.trans.txt"
        lines = trans.read_text().splitlines()
        flacs = sorted(chapter.glob("*.flac"))
        # a corrupt file: the header of a FLAC then garbage
        (chapter / f"{spk}-7-9001.flac").write_bytes(flacs[0].read_bytes()[:200] + b"\x00garbage" * 50)
        lines.append(f"{spk}-7-9001 THIS FILE IS CORRUPT")
        planted["corrupt"] = f"{spk}-7-9001"
        # an empty transcript
        shutil.copy(flacs[0], chapter / f"{spk}-7-9002.flac")
        lines.append(f"{spk}-7-9002")
        planted["empty"] = f"{spk}-7-9002"
        # 8 kHz audio (kept, resampled on load)
        x, sr = sf.read(flacs[0])
        sf.write(chapter / f"{spk}-7-9003.flac", x[::2].astype(np.float32), sr // 2)
        lines.append(f"{spk}-7-9003 " + lines[0].split(" ", 1)[1])
        planted["8khz"] = f"{spk}-7-9003"
        # a transcript whose audio is missing
        lines.append(f"{spk}-7-9004 THERE IS NO AUDIO FOR THIS LINE")
        planted["missing"] = f"{spk}-7-9004"
        trans.write_text("\n".join(lines) + "\n")
    return planted


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now (from /proc), parents first; [] if it is gone."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    if not Path(f"/proc/{pid}").exists():
        return []
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += children.get(p, [])
    return out


def _signal(pid: int, sig) -> None:
    import os

    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Lab:
    """A lab under ``home`` driven through the real ``asrlab`` command line, for engine tests:
    writes tiny experiments, runs commands, waits for runs, reads the store, and at the end
    stops the supervisor and any worker still running."""

    def __init__(self, home: Path, corpus: Path, tmp: Path) -> None:
        import sys

        self.home, self.corpus, self.tmp = Path(home), Path(corpus), Path(tmp)
        self.db = self.home / "lab.duckdb"
        self.python = sys.executable
        self._n = 0

    def experiment(self, steps: int = 20, checkpoint_every: int = 10, log_every: int = 5,
                   utterances: int = 10, eval_every: int = 0, preset: str = "tiny",
                   splits: tuple[str, ...] = ("test-clean",), tags: tuple[str, ...] = ()) -> Path:
        """A tiny train -> export -> evaluate experiment on the tiny corpus (with
        ``eval_every``, the train stage also evaluates dev and the final splits every N steps)."""
        self._n += 1
        path = self.tmp / f"exp{self._n}.toml"
        periodic = (f"eval_every = {eval_every}\neval_utterances = {utterances}\n"
                    f"eval_splits = {json.dumps(['dev', *splits])}\n") if eval_every else ""
        path.write_text(f"""name = "t{self._n}"
tags = {json.dumps(list(tags))}
seed = 0
[data]
corpus = "{self.corpus}"
vocab_size = 64
[[stages]]
kind = "train"
name = "model"
[stages.model]
preset = "{preset}"
[stages.train]
max_steps = {steps}
max_duration = 20.0
warmup_steps = 10
log_every = {log_every}
checkpoint_every = {checkpoint_every}
keep_checkpoints = 2
{periodic}[[stages]]
kind = "export"
name = "export"
model = "model"
[[stages]]
kind = "evaluate"
name = "eval"
model = "model"
splits = {json.dumps(list(splits))}
max_utterances = {utterances}
""")
        return path

    def pruning_experiment(self, steps: int = 24, utterances: int = 8) -> Path:
        """A tiny model, then L0 structured pruning (layerwise KD, fine-tuned) and magnitude
        pruning of it, and a LAS rescorer for it (a two-pass model), each exported and
        evaluated: masks for the Masks page, n-best lists for the Listen page; the L0 model also
        in sherpa-onnx int8, an int8 point beside its PyTorch one on the Pareto page."""
        self._n += 1
        path = self.tmp / f"prune{self._n}.toml"
        train = ("max_duration = 20.0\nwarmup_steps = 5\nlog_every = 4\n"
                 "checkpoint_every = 8\naverage_last = 1\n")
        stages = "".join(f"""
[[stages]]
kind = "export"
name = "export-{n}"
model = "{n}"
[[stages]]
kind = "evaluate"
name = "eval-{n}"
model = "{n}"
splits = ["test-clean"]
max_utterances = {utterances}
""" for n in ("base", "l0", "sparse", "las")) + f"""
[[stages]]
kind = "export"
name = "onnx-l0"
model = "l0"
format = "sherpa-onnx"
int8 = true
[[stages]]
kind = "evaluate"
name = "eval-l0-int8"
model = "l0"
splits = ["test-clean"]
max_utterances = {utterances}
runtime = "sherpa-onnx"
int8 = true
"""
        path.write_text(f"""name = "p{self._n}"
tags = ["prune-test"]
seed = 0
[data]
corpus = "{self.corpus}"
vocab_size = 64
[[stages]]
kind = "train"
name = "base"
[stages.model]
preset = "tiny"
[stages.train]
max_steps = {steps}
{train}
[[stages]]
kind = "prune_l0"
name = "l0"
model = "base"
teacher = "base"
[stages.train]
max_steps = {steps}
{train}
[stages.prune]
target = 0.5
warmup_steps = {steps // 2}
gate_lr = 0.2
finetune_steps = 4
mask_every = 4
[[stages]]
kind = "prune_magnitude"
name = "sparse"
model = "base"
teacher = "base"
[stages.train]
max_steps = {steps}
{train}
[stages.prune]
sparsity = 0.6
end_step = {steps // 2}
every = 4
mask_every = 4
[[stages]]
kind = "las_train"
name = "las"
model = "base"
[stages.las]
embed_dim = 32
layers = [48]
attn_dim = 32
out_dim = 48
[stages.train]
max_steps = 8
{train}
[stages.twopass]
tune_utterances = 6
{stages}""")
        return path

    def demo_twin(self, source: Path | None = None, utterances: int = 8) -> Path:
        """``experiments/demo.toml``'s tiny twin: the same stages, kinds, inputs and methods,
        read from the file itself (so the twin follows the demo as it changes), with the tiny
        corpus, the tiny preset and a few steps per stage."""
        import tomllib

        from engine.config import to_toml

        src = source or Path(__file__).resolve().parents[1] / "experiments" / "demo.toml"
        exp = tomllib.loads(src.read_text())
        self._n += 1
        exp["name"] = f"{exp['name']}-twin{self._n}"
        exp["data"] = {**exp["data"], "corpus": str(self.corpus), "vocab_size": 64}
        for st in exp["stages"]:
            if isinstance(st.get("model"), dict):
                st["model"] = {**st["model"], "preset": "tiny"}
                if st["model"].get("blocks"):  # tiny has 3, the fewest the config allows
                    st["model"]["blocks"] = 3
            if "train" in st:
                t = st["train"]
                steps = 30 if st["kind"] == "train" else 12
                t.update(max_steps=steps, max_duration=20.0,
                         warmup_steps=min(t.get("warmup_steps", 5), 5),
                         loss_warmup_steps=min(t.get("loss_warmup_steps", 0), 5),
                         log_every=4, checkpoint_every=6)
                t.pop("max_minutes", None)
                if t.get("eval_every"):
                    t.update(eval_every=15, eval_utterances=utterances)
            if "prune" in st and st["kind"] == "prune_l0":
                st["prune"].update(warmup_steps=6, gate_lr=0.2, finetune_steps=4, mask_every=4)
            if st["kind"] == "evaluate":
                st["max_utterances"] = utterances
        path = self.tmp / f"demo-twin{self._n}.toml"
        path.write_text(to_toml(exp))
        return path

    def cli(self, *args: str, check: bool = True, timeout: float = 120):
        import os
        import subprocess

        p = subprocess.run([self.python, "-m", "engine.cli", *args], capture_output=True,
                           text=True, timeout=timeout,
                           env={**os.environ, "ASRLAB_HOME": str(self.home)})
        if not check:
            return p
        assert p.returncode == 0, f"asrlab {' '.join(args)}: {p.stderr}"
        return p.stdout

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def status(self, run_id: str) -> dict:
        from engine.runner.client import status

        return status(self.home, run_id)[0]

    def stage(self, run_id: str, name: str) -> dict:
        return next(s for s in self.status(run_id)["stages"] if s["name"] == name)

    def wait_for(self, cond, what: str, timeout: float = 300.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.25)

    def cancel_while_paused(self, pid: int, *cancel_args: str) -> None:
        """``asrlab cancel CANCEL_ARGS`` while the stage worker ``pid`` (and its process group) is
        stopped (SIGSTOP), and
        let it go on only once the cancel's SIGTERM is pending on it: the worker handles the
        cancel before its next step, however fast it trains (a tiny stage can otherwise finish
        before the cancel arrives, and a cancel test would pass or fail on timing)."""
        import signal

        def sigterm_pending() -> bool:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return True  # gone: nothing left to wait for
            masks = [int(line.split()[1], 16) for line in status.splitlines()
                     if line.startswith(("SigPnd:", "ShdPnd:"))]
            return any(m & (1 << (signal.SIGTERM - 1)) for m in masks)

        # the worker and every process under it: torchrun starts its ranks in sessions of
        # their own, so its process group alone would leave the ranks training
        tree = process_tree(pid)
        if not tree:
            raise AssertionError(f"worker {pid} had already ended before the cancel: give the "
                                 f"test's stage more steps")
        for p in tree:
            _signal(p, signal.SIGSTOP)
        try:
            self.cli("cancel", *cancel_args)
            self.wait_for(sigterm_pending, "the cancel's SIGTERM to reach the paused worker", 120)
        finally:
            for p in tree:
                _signal(p, signal.SIGCONT)

    def wait(self, run_id: str, timeout: float = 400.0) -> dict:
        """The run's status once it has ended (done, failed or cancelled) and nothing of it is
        still running."""
        out = {}

        def ended() -> bool:
            out["st"] = self.status(run_id)
            return out["st"]["state"] in ("done", "failed", "cancelled")

        self.wait_for(ended, f"run {run_id} to end", timeout)
        return out["st"]

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        from engine.store import read

        return [tuple(r.values()) for r in read(self.db, sql, params)]

    def assert_ingested_exactly_once(self, run_id: str) -> None:
        """Every event line in the run's spools is in the store once: each spool's committed
        offset is its size, the supervisor's count of lines it took in equals the lines in the
        file (an event ingested twice would show here: the tables' keys would hide it), and
        counts per kind agree."""
        import json

        kinds: dict[str, int] = {}
        metric_steps: dict[str, set] = {}
        # the supervisor's name for the folder (a run on shared storage is linked from runs/)
        run_dir = Path(self.query("SELECT run_dir FROM runs WHERE run_id = ?", [run_id])[0][0])
        for spool in (run_dir / "spool").glob("*.jsonl"):
            for line in spool.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                kinds[ev["type"]] = kinds.get(ev["type"], 0) + 1
                if ev["type"] == "metrics":
                    metric_steps.setdefault(spool.stem, set()).add(ev["step"])
            lines = len(spool.read_bytes().splitlines())
            self.wait_for(lambda: self.query(
                "SELECT offset_, events FROM spool_offsets WHERE source = ?", [str(spool)])
                == [(spool.stat().st_size, lines)], f"{spool} to be ingested once")
        logs = self.query("SELECT count(*) FROM logs WHERE run_id = ?", [run_id])[0][0]
        assert logs == kinds.get("log", 0), (logs, kinds)
        metrics = self.query("SELECT stage, count(*) FROM metrics WHERE run_id = ? GROUP BY 1",
                             [run_id])
        assert dict(metrics) == {k: len(v) for k, v in metric_steps.items()}, metrics
        evals = self.query("SELECT count(*) FROM evals WHERE run_id = ?", [run_id])[0][0]
        assert evals == kinds.get("eval", 0)

    def shutdown(self) -> None:
        import os
        import signal

        from engine.runner.client import status, stop_supervisor

        try:
            pids = [s["pid"] for r in status(self.home) for s in r["stages"]
                    if s["state"] == "running" and s["pid"]]
        except Exception:  # noqa: BLE001 - cleaning up after a failed test
            pids = []
        stop_supervisor(self.home, timeout=20)
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def is_worker(pid: int, run_id: str) -> bool:
    """``pid`` is a live stage worker of ``run_id`` (not a pid reused by something else)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"engine.runner.worker" in cmd and run_id.encode() in cmd


def retry(fn, timeout: float = 10.0):
    """``fn()`` until it stops raising (e.g. a DuckDB open while the writer holds the file)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)



def run_on_fake_cuda(exp, out: Path, fake, log=lambda line: None) -> dict:
    """Run ``exp`` with every model-running stage on ``cuda``, in this process, those stages
    inside ``fake`` (an ``engine.fakecuda.FakeCuda``: CUDA tensors on a machine without a GPU).
    Export and ONNX stages run on the CPU by design (they load models there) and outside it
    (torch's ONNX tracer does not run under a dispatch mode). Returns {stage: outputs}, as
    ``run_experiment`` does; ``fake`` has counted the kernels and host syncs."""
    import time

    from engine import devices
    from engine.data.corpus import write_json_atomic
    from engine.stages import Context, run_stage

    with fake:
        exp = devices.with_device(exp, "cuda", exp.name)
    on_device = {id(st) for _, _, st in devices.stage_devices(exp)}
    ctx = Context(exp, Path(out).resolve(), False, log)
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ctx.out / "experiment.json", exp.model_dump(mode="json"))
    for st in exp.stages:
        t0 = time.perf_counter()
        if id(st) in on_device and getattr(st, "runtime", "torch") == "torch":
            with fake:
                ctx.outputs[st.name] = run_stage(st, ctx)
        else:
            ctx.outputs[st.name] = run_stage(st, ctx)
        ctx.outputs[st.name]["seconds"] = round(time.perf_counter() - t0, 1)
    return ctx.outputs
