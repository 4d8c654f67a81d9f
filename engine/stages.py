"""Stage kinds: ``kind -> function(stage, context) -> outputs``.

A stage reads its inputs from the outputs of the stages it names and writes into its own folder
``OUT/STAGE_NAME/``. This issue's kinds: ``train`` (a model from presets, or continued from an
earlier stage with ``init_from``), ``evaluate`` (WER with intervals per split, every hypothesis,
and the accounting figures) and ``export`` (the deployable artifact whose bytes are the size).
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
from engine.config import DistillStage, EvaluateStage, Experiment, ExportStage, TrainStage
from engine.data.corpus import write_json_atomic
from engine.data.features import compute_features, train_cmvn
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


def corpus_tokenizer(corpus: Path, vocab_size: int, model_type: str) -> Tokenizer:
    from engine.data.corpus import load_supervisions
    from engine.locks import file_lock

    path = tokenizer_dir(corpus, vocab_size, model_type)
    with file_lock(corpus / ".prepare.lock"):
        if not (path / "tokenizer.model").exists():
            texts = [s.text for s in load_supervisions(corpus, "train")]
            train_tokenizer(texts, path, vocab_size, model_type)
    return Tokenizer(path)


def split_features(corpus: Path, split: str, progress: bool = False):
    """Cached-feature cuts of one split; workers side by side compute a cache once."""
    from engine.locks import file_lock

    with file_lock(corpus / ".prepare.lock"):
        return compute_features(corpus, split, progress=progress)


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


def model_tokenizer(meta: dict) -> Tokenizer | None:
    proto = meta.get("tokenizer")
    return Tokenizer(proto=bytes(proto.numpy().tobytes())) if proto is not None else None


# ----- train -------------------------------------------------------------------------------------
def run_train(stage: TrainStage, ctx: Context) -> dict:
    return fit(stage, ctx, new_model(stage, ctx))


def run_distill(stage: DistillStage, ctx: Context) -> dict:
    """Train a student against the frozen model of ``stage.teacher`` (engine.compress.distill)."""
    from engine.compress.distill import Distiller

    student = new_model(stage, ctx)
    teacher_path = ctx.model_of(stage.teacher)
    teacher, meta = load_model(teacher_path)
    proto = meta.get("tokenizer")
    if proto is not None and bytes(proto.numpy().tobytes()) != ctx.tokenizer.proto():
        raise ValueError(f"{stage.name}: the teacher {teacher_path} was trained with another "
                         f"tokenizer than this experiment's (corpus {ctx.exp.data.corpus}, "
                         f"vocabulary {ctx.exp.data.vocab_size}); distillation needs the same one")
    ctx.log(f"{stage.name}: distilling {stage.model.preset} from {stage.teacher} "
            f"({sum(p.numel() for p in teacher.parameters()):,} parameters), KD {stage.kd.loss} "
            f"x {stage.kd.weight}" + (f", layerwise {stage.kd.layerwise_distance} x "
                                      f"{stage.kd.layerwise_weight}"
                                      if stage.kd.layerwise_weight else ""))
    return fit(stage, ctx, Distiller(student, teacher, stage.kd))


def new_model(stage, ctx: Context) -> Transducer:
    """The model a train or distill stage starts from: its preset, seeded, with the corpus's
    feature statistics; weights of ``init_from`` where given."""
    tok = ctx.tokenizer
    stats = train_cmvn(ctx.corpus)
    m = stage.model
    kwargs = {k: v for k, v in {"chunk_size": m.chunk_size, "left_chunks": m.left_chunks,
                                "ctc_weight": m.ctc_weight, "dropout": m.dropout}.items()
              if v is not None}
    cfg = preset(m.preset, vocab_size=tok.vocab_size, streaming=m.streaming,
                 predictor=m.predictor, loss=m.loss, prune_range=m.prune_range,
                 simple_loss_scale=m.simple_loss_scale, time_reduction=m.time_reduction,
                 **kwargs)
    if m.blocks is not None:
        enc = cfg.encoder
        cfg = replace(cfg, encoder=replace(enc, blocks=(enc.blocks[0],) * m.blocks))
    torch.manual_seed(ctx.exp.seed)  # the initial weights depend on the seed alone
    model = build(cfg, stats)
    if stage.init_from:
        src, _ = load_model(ctx.model_of(stage.init_from), inference=False)
        model.load_state_dict(src.state_dict(), strict=False)  # heads it lacks start fresh
    return model


def fit(stage, ctx: Context, trained) -> dict:
    """Train ``trained`` (a model, or a distiller holding one) as the stage says; emit metrics,
    periodic evaluations and the final model."""
    from engine.train import Trainer

    out = ctx.out / stage.name
    tok = ctx.tokenizer
    model = getattr(trained, "student", trained)
    cuts = split_features(ctx.corpus, ctx.exp.data.train_split, progress=ctx.progress)
    bar = None
    if ctx.progress:
        from tqdm import tqdm

        total = stage.train.max_steps
        bar = tqdm(total=total, desc=f"{stage.kind} {stage.name}", unit="step", mininterval=1.0)

    limits = stage.train

    def on_metrics(row: dict) -> None:
        ctx.emit("metrics", step=row["step"], data=row)
        done = row["step"] / limits.max_steps
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
        if not limits.eval_every or step % limits.eval_every:
            return
        from engine.export import export_torch

        probe = out / "eval-probe"
        # the deployable form of this step's weights, exported as the export stage does, so
        # its size and cost are counted as the final model's are (no training-only heads)
        save_model(model, probe / "train.pt", {
            "step": step, "tokenizer": torch.frombuffer(bytearray(tok.proto()), dtype=torch.uint8)})
        try:
            artifact = Path(export_torch(probe / "train.pt", probe / "export")["artifact"])
            deployed, _ = load_model(artifact)
            for split in eval_splits:
                res = evaluate_model(deployed, tok, ctx.corpus, split, "greedy",
                                     max_utterances=limits.eval_utterances,
                                     accounting_utterances=2, artifact=artifact)
                s = res["summary"]
                ctx.emit("eval", split=split, model=str(out / "model.pt"), summary=s, step=step,
                         model_stage=stage.name)
                ctx.emit("hyps", split=split, rows=res["utterances"], step=step)
                ctx.log(f"{stage.name} step {step} {split}: WER {s['wer']:.2f}% "
                        f"[{s['wer_ci'][0]:.2f}, {s['wer_ci'][1]:.2f}] "
                        f"on {s['utterances']} utterances")
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    trainer = Trainer(trained, cuts, tok, stage.train, out, seed=ctx.exp.seed,
                      on_metrics=on_metrics, log=ctx.log, on_step=on_step)
    path = trainer.run()
    if bar is not None:
        bar.close()
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
def batches_of(cuts, max_seconds: float = 60.0):
    """Cached-feature batches of whole cuts, longest first (less padding)."""
    cuts = sorted(cuts, key=lambda c: -c.duration)
    batch, total = [], 0.0
    for c in cuts:
        if batch and total + c.duration > max_seconds:
            yield batch
            batch, total = [], 0.0
        batch.append(c)
        total += c.duration
    if batch:
        yield batch


def evaluate_model(model: Transducer, tok: Tokenizer, corpus: Path, split: str,
                   method: str = "greedy", beam: int = 4, max_utterances: int | None = None,
                   accounting_utterances: int = 20, artifact: Path | None = None) -> dict:
    """WER with interval, per-utterance results and accounting for one split."""
    from engine.compress.accounting import account
    from engine.data.batching import cut_text
    from engine.decode import decode
    from engine.evaluate import score_utterance, summarize

    cuts = split_features(corpus, split)
    if max_utterances:
        cuts = cuts.subset(first=max_utterances)
    model.eval()
    results, where = [], {}
    feats_for_accounting = []
    with torch.no_grad():
        for group in batches_of(cuts):
            feats = [torch.as_tensor(c.load_features()) for c in group]
            lens = torch.tensor([f.shape[0] for f in feats])
            x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
            hyps = decode(model, x, lens, method, beam)
            for c, h in zip(group, hyps):
                results.append(score_utterance(c.id, cut_text(c), tok.decode(h)))
                where[c.id] = audio_of(c)
            if len(feats_for_accounting) < accounting_utterances:
                feats_for_accounting += feats[: accounting_utterances - len(feats_for_accounting)]
    summary = summarize(results)
    summary.update(account(model, feats_for_accounting, artifact))
    summary.update({"split": split, "decoding": method})
    return {"summary": summary, "utterances": [{**r.to_dict(), **where[r.cut_id]} for r in results]}


def audio_of(cut) -> dict:
    """Where an utterance's audio lies (file, start and duration in seconds), for the explorer's
    Listen page; empty when the cut has no file-backed recording."""
    rec = getattr(cut, "recording", None)
    src = rec.sources[0] if rec is not None and rec.sources else None
    if src is None or src.type != "file":
        return {}
    return {"audio": str(Path(src.source).resolve()), "start": float(cut.start),
            "duration": float(cut.duration)}


def run_evaluate(stage: EvaluateStage, ctx: Context) -> dict:
    model_path = ctx.model_of(stage.model)
    model, meta = load_model(model_path)
    tok = model_tokenizer(meta) or ctx.tokenizer
    out = ctx.out / stage.name
    out.mkdir(parents=True, exist_ok=True)
    artifact = artifact_of(ctx, model_path)
    method = "streaming" if stage.streaming else stage.decoding
    summaries = {}
    for i, split in enumerate(stage.splits):
        res = evaluate_model(model, tok, ctx.corpus, split, method, stage.beam,
                             stage.max_utterances, artifact=Path(artifact))
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
    from engine.export import export_torch

    src = ctx.model_of(stage.model)
    out = ctx.out / stage.name
    info = export_torch(src, out)
    ctx.emit("artifact", kind="export", path=info["artifact"], bytes=info["bytes"])
    ctx.log(f"{stage.name}: {info['artifact']} ({info['bytes']:,} bytes)")
    return {**info, "model": str(src)}


STAGE_KINDS = {"train": run_train, "distill": run_distill, "evaluate": run_evaluate,
               "export": run_export}


def run_experiment(exp: Experiment, out: Path, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every stage in order (in this process, for now); returns each stage's outputs."""
    ctx = Context(exp, Path(out).resolve(), progress, log)
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ctx.out / "experiment.json", exp.model_dump(mode="json"))
    for st in exp.stages:
        t0 = time.perf_counter()
        ctx.outputs[st.name] = STAGE_KINDS[st.kind](st, ctx)
        ctx.outputs[st.name]["seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(ctx.out / "outputs.json", ctx.outputs)
    return ctx.outputs
