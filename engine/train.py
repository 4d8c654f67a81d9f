"""The training loop: plain PyTorch, small enough to hold in your head.

AdamW; linear warmup then inverse-square-root decay; gradient clipping; SpecAugment and optional
noise; duration-bucketed batches; a checkpoint every ``checkpoint_every`` steps holding model,
optimizer, scheduler, sampler position, every RNG state and the step, so that **a run killed with
``kill -9`` and resumed reaches the same weights as one never killed** (tests/test_train.py).
Batches are built in this process: with cached features that costs about 1% of a step here, and it
keeps every random draw in one checkpointed place.

Metrics go to ``OUT/metrics.jsonl`` every ``log_every`` steps: loss terms per token, learning
rate, gradient norm, seconds of audio per second, resident memory.

**Data-parallel** (a stage with ``nproc > 1``, started by torchrun with a process group): every
rank draws the same global batch from the same sampler and takes every ``world``-th cut of it
(longest first, so ranks pad alike); the loss is scaled by ``world / global batch`` so DDP's
gradient average is exactly the single-process gradient of the global batch. Loss terms are
summed over ranks before they are logged. Rank 0 alone writes metrics, checkpoints and the
model; every rank resumes from the newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets

from engine.checkpoint import atomic_save, save_model
from engine import devices
from engine.config import TrainConfig
from engine.data.batching import TransducerDataset, bucket_sampler
from engine.data.features import SpecAugment, SpeedPerturb
from engine.data.noise import NoiseAugment
from engine.data.tokenizer import Tokenizer
from engine.models.build import to_dict
from engine.models.transducer import Transducer


EXTRA_TERMS = ("kd", "layer", "las", "las_kd")  # terms a distiller or a second pass adds
ZEROED_WARN = 0.01  # a window whose zeroed losses exceed this share of its utterances is logged


def lr_factor(step: int, warmup: int, schedule: str = "inv_sqrt", total: int = 0,
              final: float = 0.02) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then ``inv_sqrt``: 1/sqrt decay (no total
    step count needed, never annealed), or ``cosine``: half a cosine from 1 down to ``final``
    at step ``total`` (the budget), flat at ``final`` after it."""
    step = max(step, 1)
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "cosine" and total > warmup:
        done = min(1.0, (step - warmup) / (total - warmup))
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * done))
    if warmup <= 0:
        return 1.0
    return math.sqrt(warmup / step)


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _np_state() -> list:
    """numpy's global RNG state (lhotse's time warp draws from it) as plain data + a tensor, so
    checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]


def _set_np_state(st: list) -> None:
    np.random.set_state((st[0], st[1].numpy().astype(np.uint32), st[2], st[3], st[4]))


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_seconds: float = 0.0
    audio_seconds: float = 0.0


class Trainer:
    def __init__(self, model: Transducer, cuts: CutSet, tokenizer: Tokenizer, cfg: TrainConfig,
                 out: Path, seed: int = 0,
                 on_metrics: Callable[[dict], None] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_step: Callable[[int], None] | None = None,
                 span: tuple[int, int] | None = None) -> None:
        """``span``: (updates before this run, updates of the whole stage) for what moves with
        the stage's progress (a KD schedule), when this run is a later phase of a stage (a
        pruned model's fine-tuning); default (0, ``cfg.max_steps``)."""
        self.span = span or (0, cfg.max_steps)
        self.model, self.cuts, self.cfg, self.out, self.seed = model, cuts, cfg, Path(out), seed
        # what is trained and saved: the model itself, or the student inside a distiller
        self.student: Transducer = getattr(model, "student", model)
        # modules that move something with training progress (a distiller's KD schedule) and
        # modules that log figures of their own (a pruner's sparsity, the scheduled KD weight)
        self.scheduled = [m for m in model.modules() if callable(getattr(m, "set_progress", None))]
        self.reporting = [m for m in model.modules() if callable(getattr(m, "metrics", None))]
        self.on_metrics = on_metrics
        self.on_step = on_step  # after each update, outside the timed training seconds
        self.log = log or (lambda line: None)
        self.ckpt_dir = self.out / "checkpoints"
        self.specaug_gen = torch.Generator().manual_seed(seed)
        self.dataset = TransducerDataset(
            tokenizer, spec_augment=SpecAugment(generator=self.specaug_gen) if cfg.spec_augment else None,
            noise=NoiseAugment(cfg.noise_p, seed=seed) if cfg.noise_p > 0 else None,
            speed=(SpeedPerturb(cfg.speed_perturb, tuple(cfg.speed_factors), seed=seed + 17)
                   if cfg.speed_perturb > 0 else None))
        # a compression wrapper (engine.compress) may bring parameters of its own with their own
        # learning rate (hard-concrete gates, Lagrange multipliers): ``param_groups(peak_lr)``
        own = model.param_groups(cfg.peak_lr) if hasattr(model, "param_groups") else []
        theirs = {id(p) for g in own for p in g["params"]}
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad or id(p) in theirs:
                continue
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
        import torch.distributed as dist

        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.device = devices.resolve(cfg.device, distributed=self.world > 1)
        # on a GPU the fused AdamW, which skips a non-finite update on the device (found_inf)
        # instead of making the host wait for the gradient norm every step
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}, *own],
                                     lr=cfg.peak_lr, betas=(0.9, 0.98),
                                     fused=self.device.type == "cuda" or None)
        # the model's own parameters warm up and decay; a wrapper's keep their rate (a gate
        # must still be able to close late in training)
        main = lambda s: lr_factor(s + 1, cfg.warmup_steps, cfg.lr_schedule,  # noqa: E731
                                   cfg.max_steps, cfg.final_lr_ratio)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, [main, main] + [lambda s: 1.0] * len(own))
        self.progress = Progress()
        self._bins: list[float] | None = None
        # the model (and a distiller's frozen teacher, which its ``to`` moves too) on the
        # stage's device; the optimizer's state follows the parameters
        model.to(self.device)
        self.forward = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # parameters start equal (rank 0's are broadcast); gradients are averaged
            ids = [self.device.index] if self.device.type == "cuda" else None
            # a plain transducer uses every parameter it has (its CTC and simple heads exist
            # only when their losses do): no search of the graph for unused ones after each
            # backward. A wrapper (distiller, pruner, LAS trainer) or a model carrying a LAS it
            # does not train may leave some unused. Buffers (masks, multipliers, statistics) are
            # computed alike on every rank from the same weights: not broadcast every forward.
            plain = model is self.student and getattr(model, "las", None) is None
            self.forward = DistributedDataParallel(model, device_ids=ids,
                                                   find_unused_parameters=not plain,
                                                   broadcast_buffers=False)
            # each rank's own augmentation draws (a single process draws for the whole batch)
            self.specaug_gen.manual_seed(seed + 1000 * self.rank)

    # ----- checkpoints -------------------------------------------------------------------------
    def _sampler(self, epoch: int) -> DynamicBucketingSampler:
        # world_size=1: every rank draws the same global batch and shards it itself (_shard);
        # lhotse's own DDP split would give each rank other batches than one process takes
        if self._bins is None:  # once: every epoch and every resume draws from the same buckets
            self._bins = estimate_duration_buckets(self.cuts, num_buckets=10)
        sampler = bucket_sampler(self.cuts, self.cfg.max_duration, 10, shuffle=True,
                                 seed=self.seed, bins=self._bins, world_size=1, rank=0)
        sampler.set_epoch(epoch)
        return sampler

    def _state(self) -> dict:
        p = self.progress
        # CPU tensors only: a checkpoint loads on any device, and resumes on another
        return devices.to_cpu({
            "format": "asrlab-train-checkpoint", "config": to_dict(self.student.config()),
            "model": self.student.state_dict(),
            # a distiller's own trainable parts (layer maps); its teacher is not saved
            "distiller": self.model.state_dict() if self.model is not self.student else None,
            "optimizer": self.opt.state_dict(),
            "device": str(self.device), "precision": self.cfg.precision,
            "scheduler": self.sched.state_dict(),
            "progress": {"step": p.step, "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch,
                         "train_seconds": p.train_seconds, "audio_seconds": p.audio_seconds},
            "rng": {"torch": torch.get_rng_state(), "specaug": self.specaug_gen.get_state(),
                    "numpy": _np_state(), "python": random.getstate(),
                    "noise": self.dataset.noise.rng.bit_generator.state
                    if self.dataset.noise else None,
                    "speed": self.dataset.speed.rng.bit_generator.state
                    if self.dataset.speed else None,
                    "cuda": devices.rng_state() if self.device.type == "cuda" else None},
        })

    def save_checkpoint(self) -> Path:
        path = self.ckpt_dir / f"step-{self.progress.step:08d}.pt"
        if self.rank != 0:  # rank 0 writes; the others hold the same weights
            return path
        atomic_save(self._state(), path)
        for old in sorted(self.ckpt_dir.glob("step-*.pt"))[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint in the output folder; False when there is none."""
        ckpts = sorted(self.ckpt_dir.glob("step-*.pt"))
        if not ckpts:
            return False
        st = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
        if st.get("distiller") is not None:
            self.model.load_state_dict(st["distiller"])
        else:
            self.student.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.progress = Progress(**st["progress"])
        torch.set_rng_state(st["rng"]["torch"])
        self.specaug_gen.set_state(st["rng"]["specaug"])
        if self.rank:  # rank 0's generator was saved: the others draw their own from here
            self.specaug_gen.manual_seed(self.seed + 1000 * self.rank + self.progress.step)
        _set_np_state(st["rng"]["numpy"])
        random.setstate(st["rng"]["python"])
        if self.dataset.noise is not None and st["rng"]["noise"] is not None:
            self.dataset.noise.rng.bit_generator.state = st["rng"]["noise"]
        if self.dataset.speed is not None and st["rng"].get("speed") is not None:
            self.dataset.speed.rng.bit_generator.state = st["rng"]["speed"]
        if self.device.type == "cuda":  # a checkpoint from the CPU leaves CUDA's seeded state
            devices.set_rng_state(st["rng"].get("cuda"))
        if st.get("precision", "fp32") != self.cfg.precision:
            self.log(f"note: resuming a {st.get('precision', 'fp32')} checkpoint in "
                     f"{self.cfg.precision}: not the same run as one never stopped")
        self._truncate_metrics(self.progress.step)
        self.log(f"resumed from {ckpts[-1]} (step {self.progress.step})")
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint we resume from (they will be redone)."""
        path = self.out / "metrics.jsonl"
        if path.exists() and self.rank == 0:
            keep = [l for l in path.read_text().splitlines() if l and json.loads(l)["step"] <= step]
            path.write_text("".join(l + "\n" for l in keep))

    # ----- the loop ----------------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        if self.rank != 0:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.on_metrics:
            self.on_metrics(row)

    def _done(self) -> bool:
        p, c = self.progress, self.cfg
        return p.step >= c.max_steps or (c.max_minutes is not None
                                         and p.train_seconds >= 60 * c.max_minutes)

    def run(self) -> Path:
        """Train until ``max_steps`` or ``max_minutes``; returns the final model file."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        resumed = self.resume()
        self.log(f"training on {self.device} in {self.cfg.precision}"
                 + devices.where_note(self.cfg.device, self.device))
        if not resumed:
            torch.manual_seed(self.seed)
            np.random.seed(self.seed)
            random.seed(self.seed)
        self.model.train()
        window = {"loss": 0.0, "rnnt": 0.0, "ctc": 0.0, "simple": 0.0, "tokens": 0, "audio": 0.0,
                  "time": 0.0, "grad": 0.0, "steps": 0, "zeroed": 0, "utterances": 0}
        while not self._done():
            p = self.progress
            sampler = self._sampler(p.epoch)
            for i, cuts in enumerate(sampler):
                if i < p.batch_in_epoch:
                    continue  # fast-forward to where the checkpoint left off (no features loaded)
                t0 = time.perf_counter()
                self._step(cuts, window)
                p.batch_in_epoch = i + 1
                dt = time.perf_counter() - t0
                p.train_seconds += dt
                window["time"] += dt
                if p.step % self.cfg.log_every == 0:
                    self._log_window(window)
                if p.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.on_step and self.rank == 0:
                    self.on_step(p.step)
                if self._done():
                    break
            else:
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
        if window["steps"]:
            self._log_window(window)
        if self.progress.step < self.cfg.max_steps:  # the safety limit bit, not the budget
            self.log(f"warning: max_minutes = {self.cfg.max_minutes} ended training at step "
                     f"{self.progress.step} of max_steps = {self.cfg.max_steps} (the machine "
                     f"is slower or busier than the recipe was calibrated on); the learning "
                     f"rate had not annealed, so this model is worse than the recipe's")
        if not (self.ckpt_dir / f"step-{self.progress.step:08d}.pt").exists():
            self.save_checkpoint()
        if self.rank != 0:
            return None
        return self._final_model()

    def _shard(self, cuts: CutSet) -> tuple[CutSet, float | None]:
        """This rank's part of the global batch and what its summed loss is divided by, so
        that DDP's average is the gradient of the global batch's mean (None: a stand-in)."""
        if self.world == 1:
            return cuts, len(cuts)
        ordered = sorted(cuts, key=lambda c: (-c.duration, c.id))
        mine = ordered[self.rank::self.world]
        if not mine:  # fewer cuts than ranks: a rank still takes part, with weight 0
            return CutSet.from_cuts(ordered[:1]), None
        return CutSet.from_cuts(mine), len(ordered) / self.world

    def _step(self, cuts: CutSet, window: dict) -> None:
        cuts, denom = self._shard(cuts)
        self.dataset.augment = self.progress.step >= self.cfg.spec_augment_from
        batch = self.dataset[cuts]
        # counted on the CPU before the batch moves: the host never waits for the device here
        tokens = int(batch["token_lens"].sum()) if denom else 0
        if self.device.type != "cpu":
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
        warm = self.cfg.loss_warmup_steps
        for m in self.scheduled:
            m.set_progress(self.span[0] + self.progress.step, self.span[1])
        with devices.autocast(self.device, self.cfg.precision):
            out = self.forward(batch["features"], batch["feature_lens"], batch["tokens"],
                               batch["token_lens"],
                               warmup=min(1.0, self.progress.step / warm) if warm else 1.0)
        self.opt.zero_grad(set_to_none=True)
        (out["loss"] / denom if denom else out["loss"] * 0.0).backward()
        grad = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.device.type == "cuda":  # the fused AdamW skips a non-finite step on the GPU
            self.opt.found_inf = (~torch.isfinite(grad)).float()
            self.opt.step()
        elif torch.isfinite(grad):
            self.opt.step()
        self.sched.step()
        self.progress.step += 1
        if hasattr(self.model, "after_step"):  # a pruner re-applies its masks, updates them
            self.model.after_step(self.progress.step)
        audio = sum(c.duration for c in cuts) if denom else 0.0
        if not denom:  # a stand-in cut of a rank with no share of the batch counts for nothing
            out = {k: v * 0.0 if torch.is_tensor(v) else v for k, v in out.items()}
        self.progress.audio_seconds += audio
        # the logged terms are summed where they were computed and read once a window
        # (``_log_window``): a GPU is not made to wait for the host every step
        acc = window.setdefault("device", {})
        for k in ("loss", "rnnt", "ctc", "simple", "zeroed", *EXTRA_TERMS):
            if k in out:
                v = out[k].detach().double()
                acc[k] = acc[k] + v if k in acc else v
        g = grad.detach().double()
        acc["grad"] = acc["grad"] + g if "grad" in acc else g
        window["tokens"] += tokens
        window["audio"] += audio
        window["utterances"] += len(cuts) if denom else 0
        window["steps"] += 1

    def _sum_ranks(self, w: dict) -> dict:
        """The window summed over ranks (every rank calls this at the same steps)."""
        if self.world == 1:
            return dict(w)
        import torch.distributed as dist

        keys = sorted(k for k in w if k not in ("grad", "steps", "time"))
        # on the training device: NCCL reduces GPU tensors only
        t = torch.tensor([float(w[k]) for k in keys], dtype=torch.float64).to(self.device)
        dist.all_reduce(t)
        return {**w, **{k: (int(v) if isinstance(w[k], int) else float(v))
                        for k, v in zip(keys, t.tolist())}}

    def _read_device_sums(self, w: dict) -> None:
        """The window's sums kept on the device, read into ``w`` (one host sync a window)."""
        acc = w.pop("device", None)
        if not acc:
            return
        keys = sorted(acc)
        for k, v in zip(keys, torch.stack([acc[k].reshape(()) for k in keys]).tolist()):
            w[k] = int(round(v)) if k == "zeroed" else v

    def _log_window(self, w: dict) -> None:
        p = self.progress
        self._read_device_sums(w)
        if w["utterances"] and w["zeroed"] > ZEROED_WARN * w["utterances"]:
            self.log(f"warning: steps {p.step - w['steps'] + 1}-{p.step}: {w['zeroed']} of "
                     f"{w['utterances']} utterances got loss 0 and no gradient (no path through "
                     f"the pruned band, or a loss of 1e4 or more); more than {ZEROED_WARN:.0%} "
                     f"means the band is too narrow (prune_range) or the model has diverged")
        audio_here = w["audio"]
        w_all = self._sum_ranks(w)
        for k in w:  # this rank's window starts again
            w[k] = 0 if isinstance(w[k], int) else 0.0
        w = w_all
        p.audio_seconds += w["audio"] - audio_here  # the other ranks' share of this window
        row = {"step": p.step, "epoch": p.epoch,
               "loss": w["loss"] / max(w["tokens"], 1), "rnnt": w["rnnt"] / max(w["tokens"], 1),
               "lr": self.opt.param_groups[0]["lr"], "grad_norm": w["grad"] / max(w["steps"], 1),
               "audio_s_per_s": w["audio"] / max(w["time"], 1e-9), "rss_mb": round(rss_mb(), 1),
               "train_minutes": p.train_seconds / 60, "audio_hours": p.audio_seconds / 3600}
        if w["utterances"]:  # losses zeroed in this window, and of how many utterances
            row["zeroed_losses"] = int(w["zeroed"])
            row["utterances"] = int(w["utterances"])
        if self.student.ctc is not None:
            row["ctc"] = w["ctc"] / max(w["tokens"], 1)
        if self.student.simple_am is not None:
            row["simple"] = w["simple"] / max(w["tokens"], 1)
        for k in EXTRA_TERMS:
            if k in w:
                row[k] = w[k] / max(w["tokens"], 1)
        for m in self.reporting:  # e.g. a pruner's target and reached sparsity, the KD weight
            row.update(m.metrics())
        self._log(row)

    def _final_model(self) -> Path:
        """Average the last ``average_last`` checkpoints' weights into ``OUT/model.pt``."""
        ckpts = sorted(self.ckpt_dir.glob("step-*.pt"))[-self.cfg.average_last:]
        if len(ckpts) > 1:
            states = [torch.load(c, map_location="cpu", weights_only=True)["model"] for c in ckpts]
            avg = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
                   if v.is_floating_point() else v for k, v in states[-1].items()}
            self.student.load_state_dict(avg)
        return save_model(self.student.eval(), self.out / "model.pt", meta={
            "step": self.progress.step, "train_minutes": round(self.progress.train_seconds / 60, 2),
            "audio_hours": round(self.progress.audio_seconds / 3600, 3),
            "max_steps": self.cfg.max_steps,
            "stopped_by": "max_steps" if self.progress.step >= self.cfg.max_steps
            else "max_minutes",
            "averaged": [c.name for c in ckpts]})
