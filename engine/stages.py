"""Stage kinds: ``kind -> function(stage, context) -> outputs``.

A stage reads its inputs from the outputs of the stages it names and writes into its own folder
``OUT/STAGE_NAME/``. Kinds: ``train`` (a model from presets, or continued from an earlier stage
with ``init_from``), ``distill`` (a student against a frozen teacher), ``prune_magnitude`` and
``prune_l0`` (an earlier stage's model pruned, with optional KD from a teacher), ``evaluate``
(WER with intervals per split, every hypothesis, and the accounting figures) and ``export`` (the
deployable artifact whose bytes are the size).
Rerunning an experiment into the same folder resumes a killed training stage from its checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from engine.checkpoint import load_model, save_model
from engine.config import (DistillStage, EvaluateStage, Experiment, ExportStage, FinetuneStage,
                           LASDistillStage, LASTrainStage, PruneL0Stage, PruneMagnitudeStage,
                           TrainStage)
from engine.data.corpus import write_json_atomic
from engine.data.batching import accounting_sample, audio_of, batches_of
from engine.data.features import split_features, train_cmvn
from engine.data.tokenizer import Tokenizer, tokenizer_dir, train_tokenizer
from engine.models.build import build, preset
from engine.models.transducer import Transducer


def lab_home() -> Path:
    return Path(os.environ.get("ASRLAB_HOME", "lab")).resolve()


def resolve_corpus(spec: str, progress: bool = False) -> Path:
    """``builtin:tiny|demo|full`` (synthesized on first use under ASRLAB_HOME/corpora) or a
    corpus folder."""
    from engine.data.corpus import check_corpus

    if spec.startswith("builtin:"):
        from engine.data.synth import SIZES, synthesize

        size = spec.split(":", 1)[1]
        if size not in SIZES:
            raise ValueError(f"data.corpus: unknown built-in corpus {spec!r}; expected "
                             + ", ".join(f"builtin:{s}" for s in SIZES))
        path = lab_home() / "corpora" / size
        meta = path / "corpus.json"
        from engine.locks import file_lock

        with file_lock(path.parent / f".{size}.lock"):  # workers side by side make it once
            if not meta.exists() or not json.loads(meta.read_text()).get("complete"):
                synthesize(path, size=size, seed=0, progress=progress)
        return path
    path = Path(spec).expanduser().resolve()
    check_corpus(path)
    return path


def check_data(exp, source: str) -> None:
    """Refuse, before anything runs, a split the experiment names that its corpus lacks (an
    evaluate stage's ``splits``, ``eval_splits``, the dev split ``eval_every`` needs, the train
    split); a built-in corpus has every split, even before it is synthesized."""
    from engine.config import ConfigError, split_problems
    from engine.data.corpus import SPLITS, corpus_splits

    if exp.data.corpus.startswith("builtin:"):
        have = list(SPLITS)
    else:
        have = corpus_splits(resolve_corpus(exp.data.corpus))
    problems = split_problems(exp, have)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def corpus_tokenizer(corpus: Path, vocab_size: int, model_type: str) -> Tokenizer:
    from engine.data.corpus import load_supervisions
    from engine.locks import file_lock

    path = tokenizer_dir(corpus, vocab_size, model_type)
    with file_lock(corpus / ".prepare.lock"):
        if not (path / "tokenizer.model").exists():
            texts = [s.text for s in load_supervisions(corpus, "train")]
            train_tokenizer(texts, path, vocab_size, model_type)
    return Tokenizer(path)


def _no_event(type_: str, **data) -> None:
    pass


@dataclass
class Context:
    exp: Experiment
    out: Path
    progress: bool = True
    log: Callable[[str], None] = print
    outputs: dict[str, dict] = field(default_factory=dict)
    # events for the store (metrics, progress, evaluations, artifacts): a background stage's
    # worker spools them for the supervisor; a foreground run drops them
    emit: Callable[..., None] = _no_event
    _corpus: Path | None = None
    _tok: Tokenizer | None = None

    @property
    def corpus(self) -> Path:
        if self._corpus is None:
            self._corpus = resolve_corpus(self.exp.data.corpus, self.progress)
        return self._corpus

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tok is None:
            d = self.exp.data
            self._tok = corpus_tokenizer(self.corpus, d.vocab_size, d.tokenizer)
        return self._tok

    def model_of(self, stage_name: str) -> Path:
        return Path(self.outputs[stage_name]["model"])


def model_tokenizer(meta: dict, path: Path | None = None) -> Tokenizer | None:
    """The tokenizer embedded in a model file; for a file without one (a training checkpoint,
    a pruning stage's file) inside a run folder (``path``), the tokenizer of that run's
    experiment (its corpus, vocabulary and kind, as the stage trained with)."""
    proto = meta.get("tokenizer")
    if proto is not None:
        return Tokenizer(proto=bytes(proto.numpy().tobytes()))
    if path is None:
        return None
    for folder in Path(path).resolve().parents:
        exp_file = folder / "experiment.json"
        if exp_file.exists():
            try:
                data = json.loads(exp_file.read_text()).get("data", {})
                corpus = resolve_corpus(data.get("corpus", "builtin:tiny"))
                return corpus_tokenizer(corpus, int(data.get("vocab_size", 256)),
                                        data.get("tokenizer", "unigram"))
            except (ValueError, OSError, KeyError):
                return None
    return None


# ----- train -------------------------------------------------------------------------------------
def run_train(stage: TrainStage, ctx: Context) -> dict:
    return fit(stage, ctx, new_model(stage, ctx))


def model_of_stage(ctx: Context, stage_name: str, of: str, role: str = "teacher",
                   inference: bool = True) -> tuple[Transducer, Path]:
    """The model of the earlier stage ``of``, checked to share this experiment's tokenizer."""
    path = ctx.model_of(of)
    model, meta = load_model(path, inference=inference)
    proto = meta.get("tokenizer")
    if proto is not None and bytes(proto.numpy().tobytes()) != ctx.tokenizer.proto():
        raise ValueError(f"{stage_name}: the {role} {path} was trained with another tokenizer "
                         f"than this experiment's (corpus {ctx.exp.data.corpus}, vocabulary "
                         f"{ctx.exp.data.vocab_size}); it needs the same one")
    return model, path


def run_distill(stage: DistillStage, ctx: Context) -> dict:
    """Train a student against the frozen model of ``stage.teacher`` (engine.compress.distill)."""
    from engine.compress.distill import Distiller

    student = new_model(stage, ctx)
    teacher, _ = model_of_stage(ctx, stage.name, stage.teacher)
    kd = stage.kd
    sched = (f" ({kd.schedule} to {kd.final_weight} at step {stage.train.max_steps})"
             if kd.schedule != "constant" else "")
    layer = (f", layerwise {kd.layerwise_distance} x {kd.layerwise_weight}"
             if kd.layerwise_weight else "")
    ctx.log(f"{stage.name}: distilling {stage.model.preset} from {stage.teacher} "
            f"({sum(p.numel() for p in teacher.parameters()):,} parameters), KD {kd.loss} "
            f"x {kd.weight}{sched}{layer}")
    return fit(stage, ctx, Distiller(student, teacher, stage.kd))


# ----- pruning -----------------------------------------------------------------------------------
def _emit_masks(ctx: Context, pruner, step: int) -> None:
    ctx.emit("masks", step=step, rows=pruner.mask_records())


def _with_teacher(stage, ctx: Context, student: Transducer):
    """The student alone, or inside a Distiller when the stage names a teacher."""
    from engine.compress.distill import Distiller

    if not stage.teacher:
        return student
    teacher, _ = model_of_stage(ctx, stage.name, stage.teacher)
    return Distiller(student, teacher, stage.kd)


def _finish(path: Path, model: Transducer, tok: Tokenizer, ctx: Context, meta: dict) -> None:
    meta = {**meta, "tokenizer": torch.frombuffer(bytearray(tok.proto()), dtype=torch.uint8),
            "corpus": str(ctx.corpus)}
    save_model(model, path, meta)


def run_prune_magnitude(stage: PruneMagnitudeStage, ctx: Context) -> dict:
    """Gradual magnitude pruning of an earlier stage's model, optionally with KD from a teacher
    (engine.compress.prune_magnitude)."""
    from engine.compress.prune_magnitude import MagnitudePruner

    student, src = model_of_stage(ctx, stage.name, stage.model, "model", inference=False)
    cfg = stage.prune
    if cfg.end_step is None:
        cfg = cfg.model_copy(update={"end_step": max(cfg.start_step + 1,
                                                     int(0.7 * stage.train.max_steps))})
    pruner = MagnitudePruner(_with_teacher(stage, ctx, student), cfg)
    ctx.log(f"{stage.name}: pruning {len(pruner.names)} weight tensors of {src} to "
            f"{cfg.sparsity:.0%} ({cfg.scope}), steps {cfg.start_step}-{cfg.end_step} every "
            f"{cfg.every}" + (f", KD {stage.kd.loss} from {stage.teacher}" if stage.teacher else ""))

    def every_step(step: int) -> None:
        if step % cfg.mask_every == 0:
            _emit_masks(ctx, pruner, step)

    res = fit(stage, ctx, pruner, every_step=every_step)
    # the final file averages checkpoints: apply the last masks again so it is as sparse
    path = Path(res["model"])
    final, meta = load_model(path, inference=False)
    pruner.apply_masks(final)
    _finish(path, final, ctx.tokenizer, ctx, {**meta, "sparsity": round(pruner.sparsity(), 4)})
    _emit_masks(ctx, pruner, res["steps"])
    return {**res, "pruned_from": str(src), "sparsity": round(pruner.sparsity(), 4)}


def run_prune_l0(stage: PruneL0Stage, ctx: Context) -> dict:
    """Hard-concrete structured pruning with the size Lagrangian and layerwise KD, then the
    smaller dense model, fine-tuned (engine.compress.prune_l0)."""
    from engine.compress.prune_l0 import L0Pruner, prunable_params

    student, src = model_of_stage(ctx, stage.name, stage.model, "model", inference=False)
    before = sum(p.numel() for p in student.parameters())
    pruner = L0Pruner(_with_teacher(stage, ctx, student), stage.prune, stage.train.max_steps)
    cfg = stage.prune
    ctx.log(f"{stage.name}: L0 gates ({', '.join(cfg.units)}) on {src}, target {cfg.target:.0%} "
            f"of {int(pruner.full):,} prunable parameters, warm-up {pruner.warmup} steps"
            + (f", KD from {stage.teacher} (layerwise x {stage.kd.layerwise_weight}, output "
               f"{stage.kd.loss})" if stage.teacher else ""))

    def every_step(step: int) -> None:
        if step % cfg.mask_every == 0:
            _emit_masks(ctx, pruner, step)

    total = stage.train.max_steps + cfg.finetune_steps
    res = fit(stage, ctx, pruner, every_step=every_step, deployable=lambda: pruner.pruned_copy(),
              total_steps=total)
    path = Path(res["model"])
    masked, meta = load_model(path, inference=False)
    small = pruner.pruned_copy(masked)
    _emit_masks(ctx, pruner, res["steps"])
    reached = round(1 - prunable_params(small) / pruner.full, 4)
    pruned_path = ctx.out / stage.name / "pruned.pt"
    _finish(pruned_path, small, ctx.tokenizer, ctx, {**meta, "sparsity": reached})
    after = sum(p.numel() for p in small.parameters())
    ctx.log(f"{stage.name}: removed {reached:.1%} of the prunable parameters: {before:,} -> "
            f"{after:,} parameters; blocks " + ", ".join(
                f"[{b.heads}h {b.ffn1}/{b.ffn2}f {b.conv_channels}c]"
                for b in small.config().encoder.blocks))
    out = {**res, "model": str(pruned_path), "pruned_from": str(src), "sparsity": reached,
           "params_before": before, "params_after": after}
    if cfg.finetune_steps:
        limits = stage.train.model_copy(update={"max_steps": cfg.finetune_steps,
                                                "warmup_steps": min(stage.train.warmup_steps,
                                                                    cfg.finetune_steps // 4)})
        inner = small
        if stage.teacher and stage.kd.loss != "none":
            from engine.compress.distill import Distiller

            teacher, _ = model_of_stage(ctx, stage.name, stage.teacher)
            inner = Distiller(small, teacher, stage.kd.model_copy(update={"layerwise_weight": 0}))
        ft = fit(stage, ctx, inner, out=ctx.out / stage.name / "finetune", limits=limits,
                 step_offset=res["steps"], total_steps=total)
        # the stage's model is at its step counted over both phases
        tuned, meta = load_model(ft["model"], inference=False)
        _finish(Path(ft["model"]), tuned, ctx.tokenizer, ctx,
                {**meta, "step": res["steps"] + ft["steps"], "sparsity": reached})
        out.update({"model": ft["model"], "finetune_steps": ft["steps"],
                    "steps": res["steps"] + ft["steps"]})
    return out


# ----- two-pass: LAS rescorer and deep finetuning ---------------------------------------------------
def _las_config(stage):
    from engine.models.las import LASConfig

    c = stage.las
    return LASConfig(embed_dim=c.embed_dim, layers=tuple(c.layers), attn_dim=c.attn_dim,
                     out_dim=c.out_dim, dropout=c.dropout)


def _two_pass_done(stage, ctx: Context, res: dict) -> dict:
    """Choose the second pass's lambda on dev and store it (with n) in the model file."""
    from engine.compress.twopass import tune_lambda

    path = Path(res["model"])
    model, meta = load_model(path, inference=False)
    cuts = split_features(ctx.corpus, ctx.exp.data.dev_split).subset(
        first=stage.twopass.tune_utterances)
    tuned = tune_lambda(model, ctx.tokenizer, cuts, stage.twopass.nbest)
    ctx.log(f"{stage.name}: lambda {tuned['lambda']} chosen on {tuned['utterances']} dev "
            f"utterances (WER by lambda: {tuned['wer']})")
    _finish(path, model, ctx.tokenizer, ctx, {**meta, "twopass": tuned})
    return {**res, "las_lambda": tuned["lambda"], "nbest": tuned["nbest"]}


def run_las_train(stage: LASTrainStage, ctx: Context) -> dict:
    """A LAS rescorer for an earlier stage's model, trained on its frozen encoder."""
    from engine.compress.twopass import LASTrainer

    model, src = model_of_stage(ctx, stage.name, stage.model, "model", inference=False)
    model.with_las(_las_config(stage))
    ctx.log(f"{stage.name}: LAS ({sum(p.numel() for p in model.las.parameters()):,} parameters) "
            f"on the frozen encoder of {src}")
    return _two_pass_done(stage, ctx, fit(stage, ctx, LASTrainer(model)))


def run_las_distill(stage: LASDistillStage, ctx: Context) -> dict:
    """Stage 2 of two-pass compression: a student LAS on the frozen student encoder, distilled
    from the teacher's LAS (token-level KL under teacher forcing) plus cross-entropy."""
    from engine.compress.twopass import LASTrainer

    student, src = model_of_stage(ctx, stage.name, stage.model, "model", inference=False)
    teacher, tpath = model_of_stage(ctx, stage.name, stage.teacher)
    if teacher.las is None:
        raise ValueError(f"{stage.name}: the teacher {tpath} has no LAS rescorer; make one with "
                         f"a las_train stage")
    student.with_las(_las_config(stage))
    k = stage.kd
    ctx.log(f"{stage.name}: student LAS ({sum(p.numel() for p in student.las.parameters()):,} "
            f"parameters) on {src}, KL to the LAS of {tpath} x {k.weight} at T {k.temperature}")
    trainer = LASTrainer(student, teacher, k.temperature, k.weight, k.ce_weight)
    return _two_pass_done(stage, ctx, fit(stage, ctx, trainer))


def run_finetune(stage: FinetuneStage, ctx: Context) -> dict:
    """Stage 3: deep finetuning of every part of a two-pass model (RNN-T + LAS losses, and KD
    from a two-pass teacher when one is named)."""
    from engine.compress.distill import Distiller
    from engine.compress.twopass import DeepFinetune

    model, src = model_of_stage(ctx, stage.name, stage.model, "model", inference=False)
    if model.las is None:
        raise ValueError(f"{stage.name}: {src} has no LAS rescorer; finetune takes a two-pass "
                         f"model (las_train or las_distill)")
    teacher = None
    inner = model
    if stage.teacher:
        teacher, _ = model_of_stage(ctx, stage.name, stage.teacher)
        if stage.kd.loss != "none" or stage.kd.layerwise_weight > 0:
            inner = Distiller(model, teacher, stage.kd)
    ctx.log(f"{stage.name}: deep finetuning of {src} (RNN-T + {stage.las_weight} x LAS"
            + (f", KD from {stage.teacher}: RNN-T {stage.kd.loss}, LAS x {stage.las_kd_weight}"
               if teacher is not None else "") + ")")
    wrapped = DeepFinetune(inner, teacher, stage.las_weight, stage.las_kd_weight,
                           stage.las_temperature)
    return _two_pass_done(stage, ctx, fit(stage, ctx, wrapped))


def new_model(stage, ctx: Context) -> Transducer:
    """The model a train or distill stage starts from: its preset, seeded, with the corpus's
    feature statistics; weights of ``init_from`` where given."""
    from engine.locks import file_lock

    tok = ctx.tokenizer
    # under the corpus lock, as split_features: two stages starting together on a corpus
    # without features must not both compute them (the second would replace the folder the
    # first is reading)
    with file_lock(ctx.corpus / ".prepare.lock"):
        stats = train_cmvn(ctx.corpus)
    m = stage.model
    kwargs = {k: v for k, v in {"chunk_size": m.chunk_size, "left_chunks": m.left_chunks,
                                "ctc_weight": m.ctc_weight, "dropout": m.dropout}.items()
              if v is not None}
    cfg = preset(m.preset, vocab_size=tok.vocab_size, streaming=m.streaming,
                 predictor=m.predictor, loss=m.loss, prune_range=m.prune_range,
                 simple_loss_scale=m.simple_loss_scale, time_reduction=m.time_reduction,
                 ctc_layer=m.ctc_layer, **kwargs)
    if m.blocks is not None:
        enc = cfg.encoder
        cfg = replace(cfg, encoder=replace(enc, blocks=(enc.blocks[0],) * m.blocks))
    if m.share != "none":
        from engine.compress.share import shared_encoder

        try:
            cfg = replace(cfg, encoder=shared_encoder(cfg.encoder, m.share, m.physical_blocks))
        except ValueError as e:
            raise ValueError(f"{stage.name}: [stages.model] {e}") from None
    torch.manual_seed(ctx.exp.seed_of(stage))  # the initial weights depend on the seed alone
    model = build(cfg, stats)
    if stage.init_from:
        src, _ = load_model(ctx.model_of(stage.init_from), inference=False)
        model.load_state_dict(src.state_dict(), strict=False)  # heads it lacks start fresh
    return model


def fit(stage, ctx: Context, trained, out: Path | None = None, limits=None, step_offset: int = 0,
        deployable: Callable | None = None, every_step: Callable[[int], None] | None = None,
        total_steps: int | None = None) -> dict:
    """Train ``trained`` (a model, or a distiller or pruner holding one) as the stage says; emit
    metrics, periodic evaluations and the final model.

    ``out`` / ``limits``: another folder and [stages.train] for a second phase of one stage (a
    pruned model's fine-tuning), whose steps are logged after ``step_offset``; ``deployable()``
    gives the model a periodic evaluation scores (a pruner's smaller model); ``every_step(step)``
    runs after each update (a pruner logs its masks)."""
    from engine.train import Trainer

    out = out or ctx.out / stage.name
    tok = ctx.tokenizer
    model = getattr(trained, "student", trained)
    cuts = split_features(ctx.corpus, ctx.exp.data.train_split, progress=ctx.progress)
    limits = limits or stage.train
    total_steps = total_steps or step_offset + limits.max_steps
    bar = None
    if ctx.progress:
        from tqdm import tqdm

        bar = tqdm(total=limits.max_steps, desc=f"{stage.kind} {stage.name}", unit="step",
                   mininterval=1.0)

    def on_metrics(row: dict) -> None:
        row = {**row, "step": row["step"] + step_offset}
        ctx.emit("metrics", step=row["step"], data=row)
        done = row["step"] / total_steps
        if limits.max_minutes:
            done = max(done, row["train_minutes"] / limits.max_minutes)
        ctx.emit("progress", progress=min(done, 0.99))
        if bar is not None:
            bar.n = row["step"]
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}",
                            audio_s_per_s=f"{row['audio_s_per_s']:.0f}",
                            minutes=f"{row['train_minutes']:.1f}")
            bar.refresh()

    eval_splits = limits.eval_splits or [ctx.exp.data.dev_split]

    def on_step(step: int) -> None:
        """Evaluate the weights of this step on a fixed subset of each eval split, so the
        explorer can compare a model's best-on-dev or step-N evaluation, not only its last."""
        if every_step is not None:
            every_step(step)
        if not limits.eval_every or step % limits.eval_every:
            return
        step += step_offset
        from engine.export import export_torch

        probe = out / "eval-probe"
        # the deployable form of this step's weights, exported as the export stage does, so
        # its size and cost are counted as the final model's are (no training-only heads)
        save_model(deployable() if deployable else model, probe / "train.pt", {
            "step": step, "tokenizer": torch.frombuffer(bytearray(tok.proto()), dtype=torch.uint8)})
        try:
            artifact = Path(export_torch(probe / "train.pt", probe / "export")["artifact"])
            deployed, _ = load_model(artifact)
            for split in eval_splits:
                res = evaluate_model(deployed, tok, ctx.corpus, split, "greedy",
                                     max_utterances=limits.eval_utterances,
                                     accounting_utterances=2, artifact=artifact,
                                     device=limits.device)
                s = res["summary"]
                ctx.emit("eval", split=split, model=str(out / "model.pt"), summary=s, step=step,
                         model_stage=stage.name)
                ctx.emit("hyps", split=split, rows=res["utterances"], step=step)
                ctx.log(f"{stage.name} step {step} {split}: WER {s['wer']:.2f}% "
                        f"[{s['wer_ci'][0]:.2f}, {s['wer_ci'][1]:.2f}] "
                        f"on {s['utterances']} utterances")
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    trainer = Trainer(trained, cuts, tok, limits, out, seed=ctx.exp.seed_of(stage),
                      on_metrics=on_metrics, log=ctx.log, on_step=on_step,
                      span=(step_offset, total_steps))
    path = trainer.run()
    if bar is not None:
        bar.close()
    if path is None:  # a DDP rank other than 0: rank 0 saves and reports the model
        return {}
    # embed the tokenizer so the model file decodes to text on its own
    final, meta = load_model(path, inference=False)
    meta["tokenizer"] = torch.frombuffer(bytearray(tok.proto()), dtype=torch.uint8)
    meta["corpus"] = str(ctx.corpus)
    save_model(final, path, meta)
    ctx.emit("artifact", kind="model", path=str(path), bytes=path.stat().st_size)
    ctx.emit("artifact", kind="checkpoints", path=str(trainer.ckpt_dir),
             bytes=sum(f.stat().st_size for f in trainer.ckpt_dir.glob("*.pt")))
    return {"model": str(path), "steps": trainer.progress.step,
            "train_minutes": round(trainer.progress.train_seconds / 60, 2)}


# ----- evaluate ----------------------------------------------------------------------------------
def evaluate_model(model: Transducer, tok: Tokenizer, corpus: Path, split: str,
                   method: str = "greedy", beam: int = 4, max_utterances: int | None = None,
                   accounting_utterances: int = 20, artifact: Path | None = None,
                   las_lambda: float | None = None, device: str = "cpu") -> dict:
    """WER with interval, per-utterance results and accounting for one split.

    A two-pass model (one with a LAS rescorer) is decoded in two passes unless ``method`` is
    ``streaming``: ``wer`` is the second pass's, ``wer_first_pass`` the beam search's best,
    ``nbest`` the n (``beam``), and every utterance carries its n-best with both scores.
    ``device``: where it decodes (engine.devices); accounting is measured on the CPU."""
    import copy

    from engine import devices
    from engine.compress.accounting import account
    from engine.data.batching import cut_text
    from engine.decode import decode, two_pass
    from engine.evaluate import score_utterance, summarize

    cuts = split_features(corpus, split)
    if max_utterances:
        from engine.data.batching import first_or_spread

        cuts = first_or_spread(cuts, split, max_utterances)
    dev = devices.resolve(device)
    model.eval().to(dev)
    second = model.las is not None and method != "streaming"
    lam = 0.5 if las_lambda is None else las_lambda
    results, first, where, nbests = [], [], {}, {}
    times = {"first_pass_s": 0.0, "rescore_s": 0.0}
    audio_s = 0.0
    with torch.no_grad():
        for group in batches_of(cuts):
            feats = [torch.as_tensor(c.load_features()) for c in group]
            lens = torch.tensor([f.shape[0] for f in feats])
            x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(dev)
            lens = lens.to(dev)
            audio_s += sum(c.duration for c in group)
            if second:
                enc, enc_lens = model.encode(x, lens)
                passes, t = two_pass(model, enc, enc_lens, beam, lam)
                for k in times:
                    times[k] += t[k]
                hyps = [p["second"] for p in passes]
                for c, p in zip(group, passes):
                    first.append(score_utterance(c.id, cut_text(c), tok.decode(p["first"])))
                    nbests[c.id] = {"chosen": p["chosen"], "lambda": lam, "list": [
                        {"text": tok.decode(h["tokens"]), "rnnt": round(h["rnnt"], 3),
                         "las": round(h["las"], 3), "score": round(h["score"], 3)}
                        for h in p["nbest"]]}
            else:
                hyps = decode(model, x, lens, method, beam)
            for c, h in zip(group, hyps):
                results.append(score_utterance(c.id, cut_text(c), tok.decode(h)))
                where[c.id] = audio_of(c)
    sample = accounting_sample(cuts, accounting_utterances)
    feats_for_accounting = [torch.as_tensor(c.load_features()) for c in sample]
    summary = summarize(results)
    # RTF and MACs of the deployment target: the CPU, whatever decoded the WER
    cpu_model = model if dev.type == "cpu" else copy.deepcopy(model).cpu()
    summary.update(account(cpu_model, feats_for_accounting, artifact,
                           search="twopass" if second else method, beam=beam))
    summary["accounting_cuts"] = [c.id for c in sample]
    summary.update({"split": split, "decoding": "twopass" if second else method})
    if second:
        f = summarize(first)
        summary.update({"wer_first_pass": f["wer"], "wer_first_pass_ci": f["wer_ci"],
                        "nbest": beam, "las_lambda": lam,
                        "first_pass_rtf": round(times["first_pass_s"] / max(audio_s, 1e-9), 5),
                        "rescore_rtf": round(times["rescore_s"] / max(audio_s, 1e-9), 5)})
    rows = []
    for r in results:
        row = {**r.to_dict(), **where[r.cut_id]}
        if r.cut_id in nbests:
            row["nbest"] = nbests[r.cut_id]
        rows.append(row)
    return {"summary": summary, "utterances": rows}


def _onnx_dir(stage: EvaluateStage, ctx: Context, model_path: Path) -> Path:
    """The sherpa-onnx folder an evaluate stage scores: its ``export``, else the last sherpa-onnx
    export of its model."""
    if stage.export:
        return Path(ctx.outputs[stage.export]["onnx_dir"])
    for out in reversed(list(ctx.outputs.values())):
        if out.get("onnx_dir") and out.get("model") == str(model_path):
            return Path(out["onnx_dir"])
    raise ValueError(f"{stage.name}: no sherpa-onnx export of {stage.model!r} ran before it")


def run_evaluate(stage: EvaluateStage, ctx: Context) -> dict:
    model_path = ctx.model_of(stage.model)
    model, meta = load_model(model_path)
    tok = model_tokenizer(meta) or ctx.tokenizer
    out = ctx.out / stage.name
    out.mkdir(parents=True, exist_ok=True)
    artifact = artifact_of(ctx, model_path)
    bytes_from = "export"
    if artifact == Path(model_path) and stage.runtime == "torch":
        # no export stage made this model's artifact: export it here, so bytes are always the
        # deployable file's (the training file keeps CTC and simple-joiner heads, stored dense)
        from engine.export import export_torch

        artifact = Path(export_torch(model_path, out / "deployable")["artifact"])
        bytes_from = "implicit export"
    method = "streaming" if stage.streaming else stage.decoding
    onnx_dir = None
    if stage.runtime in ("sherpa-onnx", "onnxruntime"):
        onnx_dir = _onnx_dir(stage, ctx, model_path)
    elif stage.runtime == "torch-int8":
        from engine.compress.quantize import torch_int8

        model = torch_int8(model)
        artifact = out / "model.int8.pt"  # its bytes are the int8 model's size
        torch.save(model.state_dict(), artifact)
        bytes_from = "torch-int8 state dict"
    summaries = {}
    for i, split in enumerate(stage.splits):
        if onnx_dir is not None:
            from engine.runtimes import evaluate_exported

            res = evaluate_exported(onnx_dir, ctx.corpus, split, stage.runtime, stage.int8,
                                    stage.max_utterances,
                                    accounting_utterances=stage.accounting_utterances)
        else:
            res = evaluate_model(model, tok, ctx.corpus, split, method, stage.beam,
                                 stage.max_utterances, artifact=Path(artifact),
                                 accounting_utterances=stage.accounting_utterances,
                                 las_lambda=(meta.get("twopass") or {}).get("lambda"),
                                 # dynamic int8 runs on the CPU only
                                 device="cpu" if stage.runtime == "torch-int8" else stage.device)
            res["summary"]["runtime"] = stage.runtime
        res["summary"].setdefault("bytes_from", bytes_from)
        write_json_atomic(out / f"results_{split}.json", res["summary"])
        with open(out / f"hyps_{split}.jsonl", "w") as f:
            for u in res["utterances"]:
                f.write(json.dumps(u) + "\n")
        summaries[split] = res["summary"]
        step = int(meta.get("step") or 0)
        ctx.emit("eval", split=split, model=str(model_path), summary=res["summary"], step=step,
                 model_stage=stage.model)
        ctx.emit("hyps", split=split, rows=res["utterances"], step=step)
        ctx.emit("progress", progress=(i + 1) / len(stage.splits))
        s = res["summary"]
        ctx.log(f"{stage.name} {split}: WER {s['wer']:.2f}% "
                f"[{s['wer_ci'][0]:.2f}, {s['wer_ci'][1]:.2f}] on {s['utterances']} utterances; "
                f"{s['params']:,} params, {s['bytes']:,} bytes, "
                f"{s['macs_per_second'] / 1e6:.1f} M MACs/s, RTF {s['rtf']:.4f}")
    return {"results": summaries, "model": str(model_path)}


def artifact_of(ctx: Context, model_path: Path) -> Path:
    """The exported artifact of ``model_path`` when an export stage made one (its bytes are the
    size), else the model file itself."""
    for out in ctx.outputs.values():
        if out.get("artifact") and out.get("model") == str(model_path):
            return Path(out["artifact"])
    return Path(model_path)


# ----- export ------------------------------------------------------------------------------------
def run_export(stage: ExportStage, ctx: Context) -> dict:
    from engine.export import export_for_sherpa, export_torch

    src = ctx.model_of(stage.model)
    out = ctx.out / stage.name
    if stage.format == "sherpa-onnx":
        info = export_for_sherpa(src, out, stage.int8, stage.keep_fp32,
                                 ctx.corpus if stage.sensitivity else None, stage.tolerance,
                                 stage.sensitivity_utterances, log=ctx.log)
        ctx.emit("artifact", kind="sherpa-onnx", path=info["artifact"], bytes=info["bytes"])
        ctx.log(f"{stage.name}: {info['artifact']} (sherpa-onnx, {info['bytes']:,} bytes"
                + (f"; int8 {info['int8_bytes']:,} bytes, fp32 kept: "
                   f"{', '.join(info['fp32_modules']) or 'none'}" if stage.int8 else "") + ")")
        onnx_dir = info.pop("artifact")  # not "artifact": the torch evaluations' size file
        return {**info, "model": str(src), "onnx_dir": onnx_dir}
    info = export_torch(src, out)
    ctx.emit("artifact", kind="export", path=info["artifact"], bytes=info["bytes"])
    ctx.log(f"{stage.name}: {info['artifact']} ({info['bytes']:,} bytes)")
    return {**info, "model": str(src)}


STAGE_KINDS = {"train": run_train, "distill": run_distill, "evaluate": run_evaluate,
               "export": run_export, "prune_magnitude": run_prune_magnitude,
               "prune_l0": run_prune_l0, "las_train": run_las_train,
               "las_distill": run_las_distill, "finetune": run_finetune}


def run_stage(stage, ctx: Context) -> dict:
    """One stage, its random draws starting from its seed: whatever it draws before training
    (L0 gates, a LAS head, a model's initial weights) differs between the seeds of a sweep."""
    torch.manual_seed(ctx.exp.seed_of(stage))
    return STAGE_KINDS[stage.kind](stage, ctx)


def run_experiment(exp: Experiment, out: Path, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every stage in order (in this process, for now); returns each stage's outputs."""
    ctx = Context(exp, Path(out).resolve(), progress, log)
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ctx.out / "experiment.json", exp.model_dump(mode="json"))
    for st in exp.stages:
        t0 = time.perf_counter()
        ctx.outputs[st.name] = run_stage(st, ctx)
        ctx.outputs[st.name]["seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(ctx.out / "outputs.json", ctx.outputs)
    return ctx.outputs
