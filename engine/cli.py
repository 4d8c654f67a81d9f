"""``asrlab``: the lab's command line.

Errors a user can fix (a bad folder, a corrupt file, an impossible setting) print one clear line
naming the file or value at fault and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ASR Compression Lab: shrink streaming speech recognizers and see what it costs.")
corpus_app = typer.Typer(no_args_is_help=True, help="Make, import and inspect speech corpora.")
import_app = typer.Typer(no_args_is_help=True, help="Bring real data: LibriSpeech or lhotse manifests.")
app.add_typer(corpus_app, name="corpus")
corpus_app.add_typer(import_app, name="import")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _user_errors():
    from engine.data.corpus import CorpusError
    from engine.data.importers import CorpusImportError

    return (CorpusError, CorpusImportError, FileExistsError, FileNotFoundError, ValueError)


@corpus_app.command("synth")
def corpus_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the corpus into."),
    size: str = typer.Option("demo", help="tiny (~200 utterances, for tests), demo (~3,000), "
                                          "full (23,000; what benchmarks use)."),
    seed: int = typer.Option(0, help="Fixes sentences, voices and corruption: same seed, same corpus."),
    jobs: Optional[int] = typer.Option(None, help="Worker processes (default: all cores)."),
    force: bool = typer.Option(False, help="Replace a corpus made with other settings."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Synthesize the built-in corpus with espeak-ng and flite (resumable: rerun to finish)."""
    from engine.data.synth import synthesize

    try:
        meta = synthesize(out, size=size, seed=seed, jobs=jobs, progress=not quiet, force=force)
    except (*_user_errors(), RuntimeError) as e:  # RuntimeError: a TTS failure or a dead worker
        _fail(str(e))
    typer.echo(f"wrote {meta['utterances']} utterances to {Path(out).resolve()} "
               f"in {meta['synthesis_seconds']:.1f} s")


@corpus_app.command("info")
def corpus_info(
    corpus: Path = typer.Argument(..., help="Corpus folder."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Utterances, hours, voices and words per split, and overlap of each split with train."""
    from engine.data.corpus import corpus_info as info

    try:
        data = info(corpus)
    except _user_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{data['corpus']} ({data['kind']}"
                        + (f", size {data['size']}, seed {data['seed']}" if data["size"] else "") + ")")
    cols = ["split", "utts", "hours", "voices", "words", "vocab", "sents in train",
            "voices in train", "OOV", "SNR dB"]
    for c in cols:
        table.add_column(c, justify="left" if c == "split" else "right", no_wrap=c == "split")
    for split, s in data["splits"].items():
        snr = s.get("snr_db")
        table.add_row(split, str(s["utterances"]), f"{s['hours']:.2f}", str(s["voices"]),
                      str(s["words"]), str(s["vocabulary"]), str(s["sentence_overlap_with_train"]),
                      str(s["voice_overlap_with_train"]), f"{100 * s['oov_rate_vs_train']:.1f}%",
                      f"{snr['min']:.0f}-{snr['max']:.0f}" if snr else "clean")
    console = Console()
    console.width = max(console.width, 110)
    console.print(table)


@corpus_app.command("tokenizer")
def corpus_tokenizer(
    corpus: Path = typer.Argument(..., help="Corpus folder."),
    vocab_size: int = typer.Option(256, help="Number of tokens including <blk>, <sos/eos>, <unk>."),
    model_type: str = typer.Option("unigram", help="unigram or bpe."),
) -> None:
    """Train a sentencepiece tokenizer on the train transcripts (blank = id 0, tokens.txt)."""
    from engine.data.corpus import check_corpus, load_supervisions
    from engine.data.tokenizer import tokenizer_dir, train_tokenizer

    try:
        check_corpus(corpus)
        texts = [s.text for s in load_supervisions(corpus, "train")]
        report = train_tokenizer(texts, tokenizer_dir(corpus, vocab_size, model_type),
                                 vocab_size, model_type)
    except _user_errors() as e:
        _fail(str(e))
    except RuntimeError as e:  # sentencepiece: e.g. a vocabulary too large for the text
        _fail(f"{corpus}: sentencepiece could not train: {str(e).strip().splitlines()[-1]}")
    typer.echo(f"tokenizer {report.path}: {report.vocab_size} tokens, "
               f"{report.tokens_per_word:.2f} tokens per word on {report.sentences} train sentences")


@corpus_app.command("features")
def corpus_features(
    corpus: Path = typer.Argument(..., help="Corpus folder."),
    splits: Optional[list[str]] = typer.Option(None, "--split", help="Splits (default: all)."),
    jobs: Optional[int] = typer.Option(None, help="Worker processes (default: all cores)."),
) -> None:
    """Precompute and cache 80-dim fbank features and the train normalisation statistics."""
    from engine.data.corpus import check_corpus, corpus_splits
    from engine.data.features import compute_features, features_dir, train_cmvn

    try:
        check_corpus(corpus)
        for split in splits or corpus_splits(corpus):
            cuts = compute_features(corpus, split, jobs=jobs, progress=True)
            typer.echo(f"{split}: {len(cuts)} cuts -> {features_dir(corpus, split)}")
        if "train" in corpus_splits(corpus):
            stats = train_cmvn(corpus)
            typer.echo(f"train mean/std statistics over {stats['frames']} frames")
    except (*_user_errors(), RuntimeError) as e:
        _fail(str(e))


def _import_done(report, out: Path) -> None:
    typer.echo(report.summary())
    typer.echo(f"wrote {out.resolve()} (splits: "
               + ", ".join(f"{k} {v}" for k, v in report.splits.items()) + ")")


@import_app.command("librispeech")
def import_librispeech(
    src: Path = typer.Argument(..., help="LibriSpeech root (holding subsets) or one subset folder."),
    out: Path = typer.Option(..., "--out", help="Corpus folder to write."),
    subsets: Optional[list[str]] = typer.Option(None, "--subset", help="Only these subsets."),
    strict: bool = typer.Option(False, help="Any bad utterance is fatal (default: skip, report)."),
    force: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Import LibriSpeech's layout (SPEAKER/CHAPTER/*.flac with *.trans.txt)."""
    from engine.data.importers import import_librispeech as run

    try:
        report = run(src, out, subsets=subsets, strict=strict, force=force)
    except _user_errors() as e:
        _fail(str(e))
    _import_done(report, out)


@import_app.command("lhotse")
def import_lhotse(
    src: Path = typer.Argument(..., help="Folder of lhotse manifests (recordings+supervisions, or cuts)."),
    out: Path = typer.Option(..., "--out", help="Corpus folder to write."),
    split: Optional[str] = typer.Option(None, help="Name of the split when the folder holds one."),
    strict: bool = typer.Option(False, help="Any bad utterance is fatal (default: skip, report)."),
    force: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Import lhotse manifests (icefall users have these already)."""
    from engine.data.importers import import_lhotse as run

    try:
        report = run(src, out, strict=strict, force=force, split=split)
    except _user_errors() as e:
        _fail(str(e))
    _import_done(report, out)


def _user_errors_all():
    from engine.config import ConfigError

    return (*_user_errors(), ConfigError)


@app.command("train")
def train(
    experiment: Path = typer.Argument(..., help="Experiment TOML (see experiments/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: "
                                       "$ASRLAB_HOME/runs/NAME). Rerun into it to resume."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    device: Optional[str] = typer.Option(
        None, "--device", help="auto, cpu, cuda or cuda:N for every stage that runs a model "
                               "(default: each stage's own, auto: CUDA when present)."),
) -> None:
    """Run an experiment's stages in the foreground (train, export, evaluate)."""
    from engine import devices
    from engine.config import load_experiment
    from engine.stages import check_data, lab_home, run_experiment

    try:
        exp = load_experiment(experiment)
        if device is not None:
            exp = devices.with_device(exp, device, f"--device {device}")
        devices.check_experiment(exp, str(experiment))
        check_data(exp, str(experiment))
        target = out or lab_home() / "runs" / exp.name
        outputs = run_experiment(exp, target, progress=not quiet)
    except _user_errors_all() as e:
        _fail(str(e))
    typer.echo(f"done: {Path(target).resolve()} ({', '.join(outputs)})")


@app.command("export")
def export(
    model: Path = typer.Argument(..., help="A model file (model.pt) or checkpoint."),
    out: Path = typer.Option(..., "--out", help="Folder to write."),
    fmt: str = typer.Option("torch", "--format", help="torch (one model.pt) or sherpa-onnx "
                                                      "(encoder/decoder/joiner.onnx + tokens.txt)."),
    int8: bool = typer.Option(False, "--int8", help="sherpa-onnx: also *.int8.onnx (onnxruntime "
                                                    "dynamic quantization, MatMul weights)."),
    keep_fp32: Optional[str] = typer.Option(None, "--keep-fp32", help="Comma-separated module "
                                            "types left fp32 in the int8 files."),
    sensitivity: Optional[str] = typer.Option(
        None, "--sensitivity", help="Corpus to run the per-module int8 sensitivity sweep on "
                                    "(its dev split); types that cost more than --tolerance stay fp32."),
    tolerance: float = typer.Option(0.5, help="WER points an int8 module type may cost."),
    sweep_utterances: int = typer.Option(100, help="Utterances of the sensitivity sweep."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write a deployable artifact; its file sizes are the sizes the lab reports."""
    from engine.export import export_for_sherpa, export_torch

    try:
        if fmt == "torch":
            if int8 or keep_fp32 or sensitivity:
                _fail("--int8, --keep-fp32 and --sensitivity apply to --format sherpa-onnx")
            info = export_torch(model, out)
        elif fmt == "sherpa-onnx":
            from engine.stages import resolve_corpus

            keep = [k.strip() for k in keep_fp32.split(",") if k.strip()] if keep_fp32 else []
            if sensitivity and not int8:
                _fail("--sensitivity decides what --int8 keeps fp32; add --int8")
            info = export_for_sherpa(
                model, out, int8, keep, resolve_corpus(sensitivity) if sensitivity else None,
                tolerance, sweep_utterances, log=(lambda s: None) if as_json else typer.echo)
        else:
            _fail(f"--format {fmt!r}: expected torch or sherpa-onnx")
    except _user_errors_all() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"wrote {info['artifact']} ({info.get('format')}, {info['bytes']:,} bytes"
               + (f"; int8 {info['int8_bytes']:,} bytes, fp32 kept: "
                  f"{', '.join(info['fp32_modules']) or 'none'}" if info.get("int8_bytes") else "")
               + ")")


def _corpus_with(data: str, split: str) -> Path:
    """The corpus ``--data`` names, checked to have ``--split``."""
    from engine.data.corpus import corpus_splits
    from engine.stages import resolve_corpus

    corpus = resolve_corpus(data)
    have = corpus_splits(corpus)
    if split not in have:
        _fail(f"--split {split}: {data} has no such split (it has {', '.join(have)})")
    return corpus


@app.command("evaluate")
def evaluate(
    model: Path = typer.Argument(..., help="A model file (model.pt), export folder or checkpoint."),
    data: str = typer.Option(..., "--data", help="Corpus folder or builtin:tiny|demo|full."),
    split: str = typer.Option("test-clean", help="Split to score."),
    decoding: str = typer.Option("greedy", help="greedy, beam or streaming."),
    beam: int = typer.Option(4, min=1, help="Beam size for --decoding beam."),
    max_utterances: Optional[int] = typer.Option(None, min=1, help="Score only the first N."),
    runtime: str = typer.Option(
        "torch", help="torch, torch-int8 (PyTorch dynamic int8), or for a sherpa-onnx export "
                      "folder sherpa-onnx or onnxruntime."),
    int8: bool = typer.Option(False, "--int8", help="sherpa-onnx/onnxruntime: the *.int8.onnx files."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    device: str = typer.Option("auto", "--device", help="runtime torch: where it decodes (auto, "
                               "cpu, cuda, cuda:N); RTF and MACs are measured on the CPU."),
) -> None:
    """WER with a bootstrap 95% interval, and the model's params, bytes, MACs and RTF."""
    from engine.checkpoint import load_model
    from engine.stages import evaluate_model, model_tokenizer

    try:
        if runtime in ("sherpa-onnx", "onnxruntime"):
            from engine.runtimes import evaluate_exported

            if decoding != "greedy":
                _fail(f"--runtime {runtime} decodes greedily; --decoding {decoding} is for torch")
            if not Path(model).is_dir():
                _fail(f"{model}: --runtime {runtime} takes an exported folder; write one with "
                      f"`asrlab export {model} --format sherpa-onnx --out DIR`")
            res = evaluate_exported(Path(model), _corpus_with(data, split), split, runtime, int8,
                                    max_utterances)
        elif runtime in ("torch", "torch-int8"):
            if (Path(model) / "asrlab.json").exists() and not (Path(model) / "model.pt").exists():
                _fail(f"{model}: a sherpa-onnx export; evaluate it with --runtime sherpa-onnx")
            if int8:
                _fail("--int8 picks the int8 ONNX files; for PyTorch use --runtime torch-int8")
            m, meta = load_model(model)
            tok = model_tokenizer(meta, Path(model))
            if tok is None:
                _fail(f"{model}: has no embedded tokenizer and lies in no run folder whose "
                      f"experiment names one; evaluate the stage's model.pt or an export of it")
            corpus = _corpus_with(data, split)
            artifact = Path(model) / "model.pt" if Path(model).is_dir() else Path(model)
            if runtime == "torch-int8":
                m, artifact = _torch_int8(m, meta)
            from engine import devices

            devices.check(device, "--device")
            res = evaluate_model(m, tok, corpus, split, decoding, beam, max_utterances,
                                 artifact=artifact,
                                 las_lambda=(meta.get("twopass") or {}).get("lambda"),
                                 device="cpu" if runtime == "torch-int8" else device)
            res["summary"]["runtime"] = runtime
        else:
            _fail(f"--runtime {runtime!r}: expected torch, torch-int8, sherpa-onnx or onnxruntime")
    except _user_errors_all() as e:
        _fail(str(e))
    except typer.Exit:
        raise
    except RuntimeError as e:
        _fail(str(e))
    s = res["summary"]
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    typer.echo(f"{split}: WER {s['wer']:.2f}% (95% CI {s['wer_ci'][0]:.2f}-{s['wer_ci'][1]:.2f}) "
               f"on {s['utterances']} utterances | {s['params']:,} params | {s['bytes']:,} bytes | "
               f"{s['macs_per_second'] / 1e6:.1f} M MACs per audio second | RTF {s['rtf']:.4f} "
               f"(1 thread, {s.get('runtime', runtime)})")


def _torch_int8(model, meta):
    """PyTorch's dynamic int8 of ``model`` and a file holding it (its bytes are the size)."""
    import tempfile

    import torch

    from engine.compress.quantize import torch_int8

    q = torch_int8(model)
    path = Path(tempfile.mkdtemp(prefix="asrlab-int8-")) / "model.int8.pt"
    torch.save(q.state_dict(), path)
    return q, path


@app.command("compare")
def compare(
    model_a: Path = typer.Argument(..., help="Baseline model file."),
    model_b: Path = typer.Argument(..., help="Model compared against it."),
    data: str = typer.Option(..., "--data", help="Corpus folder or builtin:tiny|demo|full."),
    split: str = typer.Option("test-clean", help="Split to score both on."),
    decoding: str = typer.Option("greedy", help="greedy, beam or streaming."),
    max_utterances: Optional[int] = typer.Option(None, min=1, help="Score only the first N."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """WER of B minus WER of A on the same utterances, with a paired-bootstrap 95% interval."""
    from engine.checkpoint import load_model
    from engine.evaluate import UtteranceResult, paired_bootstrap
    from engine.stages import evaluate_model, model_tokenizer

    try:
        corpus = _corpus_with(data, split)
        runs = []
        for path in (model_a, model_b):
            m, meta = load_model(path)
            tok = model_tokenizer(meta)
            if tok is None:
                _fail(f"{path}: has no embedded tokenizer (train it with `asrlab train`)")
            res = evaluate_model(m, tok, corpus, split, decoding, max_utterances=max_utterances,
                                 accounting_utterances=2,
                                 las_lambda=(meta.get("twopass") or {}).get("lambda"))
            runs.append(res)
    except _user_errors_all() as e:
        _fail(str(e))
    fields = ("cut_id", "reference", "hypothesis", "ref_words", "substitutions", "deletions",
              "insertions")
    a, b = ([UtteranceResult(**{k: u[k] for k in fields}) for u in r["utterances"]] for r in runs)
    d = paired_bootstrap(a, b)
    out = {"split": split, "wer_a": runs[0]["summary"]["wer"], "wer_b": runs[1]["summary"]["wer"],
           "delta": d["delta"], "delta_ci": d["ci"], "p_b_better": d["p_b_better"],
           "utterances": d["utterances"]}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{split}: A {out['wer_a']:.2f}%  B {out['wer_b']:.2f}%  B-A {out['delta']:+.2f} "
               f"points (95% CI {d['ci'][0]:+.2f} to {d['ci'][1]:+.2f}; B better in "
               f"{100 * d['p_b_better']:.0f}% of resamples) on {d['utterances']} utterances")


@app.command("inspect")
def inspect_model(
    model: Path = typer.Argument(..., help="A model file, export folder or checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The model's real architecture: parameters and every block's sizes."""
    from engine.checkpoint import load_model
    from engine.models.build import describe

    try:
        m, _ = load_model(model)
    except _user_errors_all() as e:
        _fail(str(e))
    d = describe(m)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    typer.echo(f"{d['params']:,} parameters ({d['nonzero_params']:,} non-zero), d_model "
               f"{d['d_model']}, predictor {d['predictor']['kind']}, joiner {d['joiner_dim']}")
    for i, b in enumerate(d["blocks"]):
        typer.echo(f"  block {i}: heads {b['heads']}x{b['head_dim']}, ffn {b['ffn1']}/{b['ffn2']}, "
                   f"conv {b['conv_channels']}x{b['kernel']}, {b['params']:,} params")


# ----- the engine: background runs ---------------------------------------------------------------
supervisor_app = typer.Typer(no_args_is_help=True,
                             help="The one background process that runs stages and writes the store.")
app.add_typer(supervisor_app, name="supervisor")


def _home() -> Path:
    from engine.stages import lab_home

    return lab_home()


def _engine_errors():
    from engine.config import ConfigError
    from engine.runner.client import EngineError

    return (*_user_errors(), ConfigError, EngineError)


@supervisor_app.command("start")
def supervisor_start(as_json: bool = typer.Option(False, "--json")) -> None:
    """Start the supervisor in the background (``run`` does this on demand)."""
    from engine.runner.client import start_supervisor

    try:
        info = start_supervisor(_home())
    except _engine_errors() as e:
        _fail(str(e))
    typer.echo(json.dumps(info) if as_json else f"supervisor {info['pid']} running for {info['home']}")


@supervisor_app.command("stop")
def supervisor_stop(as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop the supervisor; running stages go on and the next supervisor adopts them."""
    from engine.runner.client import stop_supervisor, supervisor_info

    was = supervisor_info(_home())["running"]
    info = stop_supervisor(_home())
    if as_json:
        typer.echo(json.dumps(info))
    elif not was:
        typer.echo(f"no supervisor was running for {info['home']}")
    else:
        typer.echo("supervisor stopped; running stages go on" if not info["running"] else
                   f"supervisor {info['pid']} still running; see {info['log']}")


@supervisor_app.command("status")
def supervisor_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether the supervisor runs, its pid and its log."""
    from engine.runner.client import supervisor_info

    info = supervisor_info(_home())
    if as_json:
        typer.echo(json.dumps(info))
    elif info["running"]:
        typer.echo(f"supervisor {info['pid']} running for {info['home']} ({info['workers']} "
                   f"worker(s)); log: {info['log']}")
    else:
        typer.echo(f"no supervisor running for {info['home']}")


def _submit(experiment: Path, grids: list[str], executor: str = "local",
            reuse: bool = False, address: str | None = None,
            storage: Path | None = None) -> list[dict]:
    from engine.config import read_experiment
    from engine.runner.client import submit

    runs = submit(_home(), read_experiment(experiment), str(experiment), grids, executor, reuse,
                  address, storage)
    for note in (runs[0].get("notes") or []) if runs else []:
        typer.echo(f"note: {note}", err=True)
    return runs


EXECUTOR_HELP = ("local: a pool of worker processes on this machine; ray: each stage a Ray "
                 "task on a cluster (resources per stage kind, [resources.KIND] in the "
                 "experiment)")
ADDRESS_HELP = ("Ray cluster address (ray://host:10001 or host:6379; default: RAY_ADDRESS, "
                "else a local Ray instance started by the supervisor)")
STORAGE_HELP = ("A folder every Ray node reaches (NFS or similar): run folders, checkpoints "
                "and models go there (default: the lab's runs folder)")


REUSE_HELP = ("Do not recompute a stage identical (same settings, data, seed and inputs) to a "
              "finished stage of an earlier run in this lab: take its outputs, e.g. a teacher "
              "that several experiments share.")


def _print_status(runs: list[dict]) -> None:
    for r in runs:
        typer.echo(f"{r['run_id']}  {r['state']}")
        for s in r["stages"]:
            extra = ""
            m = s.get("last_metrics") or {}
            if m:
                extra = f"  step {m.get('step')} loss {m.get('loss', float('nan')):.3f}"
            if s.get("reused_from"):
                extra += f"  (reused {s['reused_from']})"
            elif s.get("executor") == "ray":
                extra += "  [ray]"
            if s.get("error"):
                extra += f"  error: {s['error']}"
            typer.echo(f"  {s['name']:<12} {s['kind']:<9} {s['state']:<9} "
                       f"{100 * (s['progress'] or 0):5.1f}%{extra}")


def _results_with_reused(run_id: str) -> list[dict]:
    """The run's evaluations, and for each stage it reused, the evaluation of the earlier run's
    stage it took (a second `make demo` computes nothing and still shows its results)."""
    from engine.runner.client import results, status

    home = _home()
    rows = results(home, run_id)
    have = {r["stage"] for r in rows}
    twins = {}
    for s in (status(home, run_id) or [{"stages": []}])[0]["stages"]:
        if s.get("reused_from") and s["name"] not in have:
            src_run, src_stage = s["reused_from"].split("/", 1)
            twins.setdefault(src_run, set()).add(src_stage)
    for src_run, names in twins.items():
        rows += [r for r in results(home, src_run) if r["stage"] in names]
    return rows


def _print_results(rows: list[dict]) -> None:
    if not rows:
        typer.echo("no evaluated models yet")
        return
    typer.echo(f"{'run':<34} {'stage':<10} {'step':>6} {'split':<11} {'WER %':>7} "
               f"{'95% CI':>15} {'params':>10} {'bytes':>11} {'MMACs/s':>8} {'RTF':>7}")
    for r in rows:
        ci = f"[{r['wer_ci'][0]:.1f}, {r['wer_ci'][1]:.1f}]"
        typer.echo(f"{r['run_id']:<34} {r['stage']:<10} {r['step']:>6} {r['split']:<11} "
                   f"{r['wer']:>7.2f} "
                   f"{ci:>15} {r['params'] or 0:>10,} {r['bytes'] or 0:>11,} "
                   f"{(r['macs_per_second'] or 0) / 1e6:>8.1f} {r['rtf'] or 0:>7.4f}"
                   + ("  superseded" if r.get("superseded") else ""))
    if any(r.get("superseded") for r in rows):
        typer.echo("superseded: computed by an older recipe, beam search or export format than "
                   "this code's; `--reuse` would not return it (rerun the run's experiment)")


def _wait(run_ids: list[str]) -> str:
    """Show progress until every run ends; returns the worst final state."""
    import time as _time

    from engine.runner.client import status

    last = None
    while True:
        runs = [status(_home(), rid)[0] for rid in run_ids]
        # a line when a state changes or a stage moves on by 5%
        view = [(r["run_id"], s["name"], s["state"], int(20 * (s["progress"] or 0)))
                for r in runs for s in r["stages"]]
        if view != last:
            for r in runs:
                parts = []
                for s in r["stages"]:
                    part = f"{s['name']} {s['state']}"
                    if s["state"] == "running":
                        part += f" {100 * (s['progress'] or 0):.0f}%"
                        m = s.get("last_metrics") or {}
                        if "loss" in m:
                            part += f" (step {m['step']}, loss {m['loss']:.3f})"
                    parts.append(part)
                typer.echo(f"{_time.strftime('%H:%M:%S')} {r['run_id']}: {', '.join(parts)}")
            last = view
        states = [r["state"] for r in runs]
        if all(st in ("done", "failed", "cancelled") for st in states):
            for st in ("failed", "cancelled", "done"):
                if st in states:
                    return st
        _time.sleep(2.0)


@app.command("run")
def run_cmd(
    experiment: Path = typer.Argument(..., help="Experiment TOML (see experiments/)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"run_id": ...}.'),
    wait: bool = typer.Option(False, "--wait", help="Show progress until the run ends, then "
                                                    "its results."),
    reuse: bool = typer.Option(False, "--reuse", help=REUSE_HELP),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    storage: Optional[Path] = typer.Option(None, "--storage", help=STORAGE_HELP),
) -> None:
    """Submit an experiment; its stages run in the background (returns at once)."""
    try:
        rec = _submit(experiment, [], executor, reuse, address, storage)[0]
    except _engine_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({"run_id": rec["run_id"]}))
    else:
        typer.echo(f"submitted run {rec['run_id']} ({len(rec['stages'])} stages); follow it with "
                   f"`asrlab status {rec['run_id']}`")
    if wait:
        final = _wait([rec["run_id"]])
        _print_results(_results_with_reused(rec["run_id"]))
        if final != "done":
            _fail(f"run {rec['run_id']} {final}; `asrlab status {rec['run_id']}` and "
                  f"`asrlab logs {rec['run_id']}` say why, `asrlab resume {rec['run_id']}` "
                  f"continues it")


@app.command("sweep")
def sweep_cmd(
    experiment: Path = typer.Argument(..., help="Experiment TOML."),
    grid: list[str] = typer.Option(..., "--grid", help="FIELD=V1,V2,... e.g. "
                                   "stages.model.model.preset=student-m,student-s or seed=1,2"),
    as_json: bool = typer.Option(False, "--json", help='Print {"run_ids": [...]}.'),
    wait: bool = typer.Option(False, "--wait", help="Show progress until every run ends."),
    reuse: bool = typer.Option(False, "--reuse", help=REUSE_HELP),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    storage: Optional[Path] = typer.Option(None, "--storage", help=STORAGE_HELP),
) -> None:
    """Submit one run per combination of the grid's values; identical stages run once."""
    try:
        runs = _submit(experiment, grid, executor, reuse, address, storage)
    except _engine_errors() as e:
        _fail(str(e))
    ids = [r["run_id"] for r in runs]
    if as_json:
        typer.echo(json.dumps({"run_ids": ids, "sweep_id": runs[0]["sweep_id"]}))
    else:
        for r in runs:
            typer.echo(f"submitted run {r['run_id']}: " + ", ".join(
                f"{k}={v}" for k, v in r["assignment"].items()))
    if wait:
        _wait(ids)


@app.command("status")
def status_cmd(
    run: Optional[str] = typer.Argument(None, help="A run id (default: every run)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Runs and their stages: state, progress, last metrics, errors."""
    from engine.runner.client import status, supervisor_info

    try:
        runs = status(_home(), run)
    except _engine_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(runs[0] if run else runs, indent=2))
    elif runs:
        _print_status(runs)
        live = [r["run_id"] for r in runs if r["state"] in ("queued", "running")]
        if live and not supervisor_info(_home())["running"]:
            typer.echo(f"no supervisor is running, so nothing above moves: `asrlab supervisor "
                       f"start` carries on queued stages and `asrlab resume {live[0]}` also "
                       f"restarts stages whose workers died with it (from their checkpoints)")
    elif not _home().exists():
        _fail(f"no lab at {_home()} (" + ("ASRLAB_HOME" if os.environ.get("ASRLAB_HOME") else
              "ASRLAB_HOME is unset, so ./lab") + "): set ASRLAB_HOME to your lab's folder, or "
              "start one with `asrlab run experiments/tiny.toml`")
    else:
        typer.echo(f"no runs yet in the lab at {_home()}: `asrlab run experiments/tiny.toml`")


@app.command("logs")
def logs_cmd(
    run: str = typer.Argument(..., help="A run id."),
    stage: Optional[str] = typer.Argument(None, help="One stage (default: all)."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing until the run ends."),
) -> None:
    """A run's worker logs (stdout and stderr of every stage, tracebacks included)."""
    import time as _time

    from engine.runner.client import log_files, status

    try:
        files = log_files(_home(), run, stage)
    except _engine_errors() as e:
        _fail(str(e))
    pos = {f: 0 for f in files}
    while True:
        for f in files:
            if f.exists() and f.stat().st_size > pos[f]:
                with open(f, errors="replace") as fh:
                    fh.seek(pos[f])
                    text = fh.read()
                    pos[f] = fh.tell()
                prefix = f"[{f.stem}] " if len(files) > 1 else ""
                for line in text.splitlines():
                    typer.echo(prefix + line)
        if not follow or status(_home(), run)[0]["state"] in ("done", "failed", "cancelled"):
            if follow:  # what was written between the last read and the end
                follow = False
                continue
            return
        _time.sleep(1.0)


# the stage states a command acts on
ACTS_ON = {"cancel": ("queued", "running"), "resume": ("failed", "cancelled", "skipped")}


def _run_command(op: str, run: str, stages: list[str] | None = None) -> list[str]:
    """Send ``op`` for the run's stages it applies to; returns their names. Fails (non-zero)
    naming the states when it applies to none: a finished run is not cancelled or resumed."""
    from engine.runner.client import send, start_supervisor, status, supervisor_info

    try:
        st = status(_home(), run)[0]  # a run that exists
        if op == "resume" and not supervisor_info(_home())["ready"]:
            # after a crash or a reboot the store still says "running" for stages whose workers
            # died with the machine: a (new) supervisor marks them failed, resumable, first
            start_supervisor(_home(), timeout=120, ready=True)
            st = status(_home(), run)[0]
        known = [s["name"] for s in st["stages"]]
        bad = sorted(set(stages or []) - set(known))
        if bad:
            _fail(f"run {run} has no stage {', '.join(map(repr, bad))}; its stages: "
                  f"{', '.join(known)}")
        picked = [s for s in st["stages"] if not stages or s["name"] in stages]
        acts = [s["name"] for s in picked if s["state"] in ACTS_ON[op]]
        if not acts:
            states = ", ".join(f"{s['name']} {s['state']}" for s in picked)
            _fail(f"nothing to {op} in run {run}: {states} (it {op}s stages that are "
                  f"{' or '.join(ACTS_ON[op])})")
        start_supervisor(_home())
        send(_home(), op, run_id=run, stages=stages or [])
        return acts
    except _engine_errors() as e:
        _fail(str(e))


STAGE_OPT_HELP = "Only this stage (repeatable); default every stage of the run."


@app.command("cancel")
def cancel_cmd(run: str = typer.Argument(..., help="A run id."),
               stage: Optional[list[str]] = typer.Option(None, "--stage", help=STAGE_OPT_HELP)
               ) -> None:
    """Stop a run's running stages and mark them and its queued stages cancelled."""
    acts = _run_command("cancel", run, stage)
    typer.echo(f"cancelling {run} ({', '.join(acts)}); `asrlab resume {run}` continues it later")


@app.command("resume")
def resume_cmd(run: str = typer.Argument(..., help="A run id."),
               stage: Optional[list[str]] = typer.Option(None, "--stage", help=STAGE_OPT_HELP)
               ) -> None:
    """Continue a run's failed, killed or cancelled stages (training from its last checkpoint)."""
    acts = _run_command("resume", run, stage)
    typer.echo(f"resuming {run} ({', '.join(acts)})")


@app.command("results")
def results_cmd(
    run: Optional[str] = typer.Argument(None, help="Only this run."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """One row per evaluated model and split: WER with its 95% interval, params, bytes, MACs, RTF."""
    from engine.runner.client import results, status

    rows = results(_home(), run)
    if run and not rows:
        try:
            status(_home(), run)  # a run that exists, with nothing evaluated yet
        except _engine_errors() as e:
            _fail(str(e))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_results(rows)


@app.command("summary")
def summary_cmd(
    run: Optional[str] = typer.Argument(None, help="A run id (default: the newest run)."),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="The model stage the others are compared with (default: the "
                                  "first evaluated trained model, the teacher)."),
    split: Optional[list[str]] = typer.Option(
        None, "--split", help="Splits to show (repeat; default: test-clean and test-other)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    name: Optional[str] = typer.Option(None, "--name", help="Without a run id: the newest run "
                                                           "of the experiment with this name."),
) -> None:
    """A run's compression table: each model's method, bytes, MACs per audio second, WER with its
    interval and the paired difference to the teacher; then the explorer's Pareto page for it."""
    from app import serve

    from engine.report import compression_table, explorer_urls, format_table
    from engine.runner.client import status

    home = _home()
    if run is None:
        runs = [r for r in status(home) if name is None or r["name"] == name]
        if not runs:
            _fail(f"no runs in {home} yet" if name is None else
                  f"no run of an experiment named {name!r} in {home}")
        run = max(runs, key=lambda r: r["created"] or 0)["run_id"]
    try:
        table = compression_table(home, run, reference, split)
    except ValueError as e:
        _fail(str(e))
    info = serve.running(home)
    urls = explorer_urls(info["url"] if info else serve.url("127.0.0.1", 8501), table)
    if as_json:
        typer.echo(json.dumps({**table, "pareto_url": urls["pareto"], "urls": urls}, indent=2))
        return
    typer.echo(f"run {run}: compared with {table['reference']} on the same utterances "
               f"(paired bootstrap, points)")
    for line in format_table(table):
        typer.echo(line)
    best = table["best"]
    if best:
        ref = next(r for r in table["rows"] if r["reference"])
        smaller = (f", {1 - best['bytes'] / ref['bytes']:.0%} fewer bytes than "
                   f"{table['reference']}" if best["bytes"] and ref["bytes"] else "")
        typer.echo(f"ship: {best['model']} ({best['runtime']}){smaller}: {best['reason']}")
    typer.echo(f"Pareto front of this run: {urls['pareto']}"
               + ("" if info else "  (start the explorer with `asrlab ui --background`)"))
    for page, what in (("compare", f"{table['reference']} against the model to ship"),
                       ("masks", "what pruning removed, block by block"),
                       ("listen", "every model on the worst utterances")):
        if page in urls:
            typer.echo(f"{page.capitalize()}: {what}: {urls[page]}")


@app.command("ui")
def ui_cmd(
    port: int = typer.Option(8501, "--port", min=0, max=65535,
                             help="Port to serve on (0: any free one, with --background)."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to bind; 0.0.0.0 shares it on the network."),
    background: bool = typer.Option(False, "--background",
                                    help="Start detached, print the URL and return."),
    stop: bool = typer.Option(False, "--stop", help="Stop a background explorer."),
) -> None:
    """The explorer: runs, launch, Pareto front, compare, listen (Streamlit, in a browser)."""
    import os

    from app import serve

    from engine.store import migrate

    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    migrate(home / "lab.duckdb")
    if stop:
        typer.echo("explorer stopped" if serve.stop(home) else "no explorer running")
        return
    if background:
        try:
            info = serve.start_background(home, port, host)
        except RuntimeError as e:
            _fail(str(e))
        typer.echo(f"explorer: {info['url']} (pid {info['pid']}; `asrlab ui --stop` ends it)")
        return
    if port == 0:
        port = serve.free_port(host)
    elif serve.port_in_use(host, port):
        _fail(f"port {port} is already in use; pass another --port (0: any free one)")
    typer.echo(f"explorer: {serve.url(host, port)} (serving {home}; Ctrl-C ends it)")
    os.environ["ASRLAB_HOME"] = str(home)
    os.execv(sys.executable, serve.command(port, host))


def main() -> None:
    app(prog_name="asrlab")


if __name__ == "__main__":
    sys.exit(main())
