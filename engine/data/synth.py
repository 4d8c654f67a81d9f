"""``asrlab corpus synth``: the built-in corpus, synthesized with espeak-ng and flite.

The corpus is fully decided by ``(size, seed)`` before any audio is made: a *plan* lists every
utterance (split, sentence, voice, rate, pitch, loudness, corruption). Workers render the plan in
parallel; each file is written to a temporary name and renamed, so an interrupted run leaves only
whole files and a rerun skips them. Manifests are written last, so a corpus with manifests is
complete.

Splits (the point of the corpus is that they measure different things):
- ``train``, ``dev``, ``test-clean``: voices of the seen pool; no sentence appears in two splits.
- ``test-other``: voices of the unseen pool (disjoint variants), noise at 5-20 dB SNR, and half of
  the utterances also reverberated or speed-changed (``engine.data.noise``, source ``eval``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from engine.data.corpus import SPLITS, write_json_atomic, write_manifests
from engine.data.noise import SOURCES, Corruption, normalize_peak, sample_corruption
from engine.data.sentences import SentenceGenerator
from engine.data.voices import Voice, pick_voices

SAMPLE_RATE = 16_000
SYNTH_VERSION = 1  # bump when the same (size, seed) would render differently


@dataclass(frozen=True)
class SizeSpec:
    tier: str  # sentence tier
    counts: dict[str, int]


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec("demo", {"train": 140, "dev": 20, "test-clean": 20, "test-other": 20}),
    "demo": SizeSpec("demo", {"train": 2400, "dev": 200, "test-clean": 200, "test-other": 200}),
    "full": SizeSpec("full", {"train": 20000, "dev": 1000, "test-clean": 1000, "test-other": 1000}),
}


@dataclass(frozen=True)
class UttPlan:
    id: str
    split: str
    text: str
    spoken: str
    template: str
    voice: Voice
    rate: float  # final rate including per-utterance jitter
    pitch: int
    level_dbfs: float  # target RMS level
    corruption: Corruption | None
    seed: int

    def audio_path(self, root: Path) -> Path:
        return root / "audio" / self.split / f"{self.id}.flac"


def make_plan(size: str, seed: int) -> list[UttPlan]:
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; expected one of {sorted(SIZES)}")
    spec = SIZES[size]
    seen, unseen = pick_voices(size, seed)
    total = sum(spec.counts.values())
    sentences = SentenceGenerator(spec.tier).unique_sentences(total, seed)
    rng = random.Random(f"plan-{seed}")
    nrng = np.random.default_rng(seed)
    plan: list[UttPlan] = []
    start = 0
    for split in SPLITS:
        n = spec.counts[split]
        pool = unseen if split == "test-other" else seen
        voices = [pool[i % len(pool)] for i in range(n)]
        rng.shuffle(voices)
        for i, (sentence, voice) in enumerate(zip(sentences[start:start + n], voices)):
            corruption = sample_corruption(SOURCES["eval"], nrng) if split == "test-other" else None
            plan.append(UttPlan(
                id=f"{split}-{i:06d}", split=split, text=sentence.text, spoken=sentence.spoken,
                template=sentence.template, voice=voice,
                rate=round(voice.rate * rng.uniform(0.92, 1.08), 3),
                pitch=min(99, max(0, voice.pitch + rng.randint(-6, 6))),
                level_dbfs=round(rng.uniform(-32.0, -18.0), 1), corruption=corruption,
                seed=rng.randrange(2**31)))
        start += n
    return plan


# ----- rendering (runs in worker processes) ----------------------------------------------------
_resamplers: dict[int, object] = {}


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return x
    import torch
    import torchaudio

    if sr not in _resamplers:
        _resamplers[sr] = torchaudio.transforms.Resample(sr, SAMPLE_RATE)
    with torch.no_grad():
        return _resamplers[sr](torch.from_numpy(x)).numpy()


def tts(text: str, voice: Voice, rate: float, pitch: int, workdir: str) -> np.ndarray:
    """Speak ``text`` with one voice; returns float32 samples at 16 kHz."""
    wav = os.path.join(workdir, "tts.wav")
    if voice.engine == "espeak":
        cmd = ["espeak-ng", "-v", voice.name, "-p", str(pitch), "-s", str(int(175 * rate)),
               "-w", wav]
        proc = subprocess.run(cmd, input=text.encode(), capture_output=True)
    elif voice.engine == "flite":
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.3f}",
               "-t", text, "-o", wav]
        proc = subprocess.run(cmd, capture_output=True)
    else:
        raise ValueError(f"unknown TTS engine {voice.engine!r} for voice {voice.id}")
    if proc.returncode != 0 or not os.path.exists(wav):
        raise RuntimeError(f"{cmd[0]} failed for voice {voice.id} on {text!r}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    os.unlink(wav)
    return _resample(x[:, 0].copy(), sr)


def render(u: UttPlan, root: Path) -> tuple[str, int]:
    """Make one utterance's file (skipped when it exists); returns (id, num_samples)."""
    path = u.audio_path(root)
    if path.exists():
        return u.id, sf.info(str(path)).frames
    with tempfile.TemporaryDirectory(prefix="asrlab-tts-") as work:
        x = tts(u.spoken, u.voice, u.rate, u.pitch, work)
    if len(x) == 0:
        raise RuntimeError(f"{u.voice.engine} produced no audio for {u.id} ({u.spoken!r})")
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-9
    x = x * (10 ** (u.level_dbfs / 20.0) / rms)
    if u.corruption is not None:
        x = u.corruption.apply(x, SOURCES["eval"], np.random.default_rng(u.seed))
    x = normalize_peak(x.astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flac")
    sf.write(str(tmp), x, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)
    return u.id, len(x)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _render_star(args: tuple[UttPlan, Path]) -> tuple[str, int]:
    return render(*args)


# ----- driver ----------------------------------------------------------------------------------
def synthesize(out: Path, size: str = "demo", seed: int = 0, jobs: int | None = None,
               progress: bool = True, force: bool = False) -> dict:
    """Render the corpus into ``out``; returns the corpus metadata written to ``corpus.json``."""
    out = Path(out).resolve()
    settings = {"kind": "synth", "size": size, "seed": seed, "synth_version": SYNTH_VERSION}
    meta_path = out / "corpus.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in settings} != settings:
            if not force:
                raise FileExistsError(
                    f"{out} already holds a corpus made with {({k: old.get(k) for k in settings})}; "
                    f"choose another --out, or pass --force to replace it")
            shutil.rmtree(out)
    plan = make_plan(size, seed)
    out.mkdir(parents=True, exist_ok=True)
    # Settings go down first (complete: false) so a resumed run can check it renders the same plan.
    write_json_atomic(meta_path, {**settings, "complete": False})
    jobs = jobs or os.cpu_count() or 1
    started = time.perf_counter()
    samples: dict[str, int] = {}
    todo = [(u, out) for u in plan]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc=f"synthesizing {size} corpus", unit="utt",
                   mininterval=0.5, dynamic_ncols=True)
    # ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (OOM, kill -9) raises
    # BrokenProcessPool here instead of hanging forever on the lost task.
    try:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork"),
                                 initializer=_init_worker) as pool:
            for uid, n in pool.map(_render_star, todo, chunksize=8):
                samples[uid] = n
                if bar is not None:
                    bar.update(1)
    except BrokenProcessPool as e:
        raise RuntimeError(f"a synthesis worker died ({e}); {len(samples)} of {len(plan)} "
                           f"utterances are done and kept: rerun the same command to resume") from e
    finally:
        if bar is not None:
            bar.close()
    for leftover in (out / "audio").glob("*/*.tmp.flac"):  # from a run killed mid-write
        leftover.unlink()
    elapsed = time.perf_counter() - started
    for split in SPLITS:
        rows = [u for u in plan if u.split == split]
        write_manifests(out, split, RecordingSet.from_recordings(_recording(u, out, samples[u.id])
                                                                 for u in rows),
                        SupervisionSet.from_segments(_supervision(u, samples[u.id]) for u in rows))
    meta = {**settings, "complete": True, "sample_rate": SAMPLE_RATE, "splits": list(SPLITS),
            "utterances": len(plan), "synthesis_seconds": round(elapsed, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(meta_path, meta)
    return meta


def _recording(u: UttPlan, root: Path, num_samples: int) -> Recording:
    return Recording(id=u.id, sources=[AudioSource("file", [0], str(u.audio_path(root)))],
                     sampling_rate=SAMPLE_RATE, num_samples=num_samples,
                     duration=num_samples / SAMPLE_RATE)


def _supervision(u: UttPlan, num_samples: int) -> SupervisionSegment:
    return SupervisionSegment(
        id=u.id, recording_id=u.id, start=0.0, duration=num_samples / SAMPLE_RATE, channel=0,
        text=u.text, language="English", speaker=u.voice.id,
        custom={"spoken": u.spoken, "template": u.template, "voice": u.voice.to_dict(),
                "rate": u.rate, "pitch": u.pitch, "level_dbfs": u.level_dbfs,
                "corruption": asdict(u.corruption) if u.corruption else None})
