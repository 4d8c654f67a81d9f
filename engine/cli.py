"""``asrlab``: the lab's command line.

Errors a user can fix (a bad folder, a corrupt file, an impossible setting) print one clear line
naming the file or value at fault and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import json
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
) -> None:
    """Run an experiment's stages in the foreground (train, export, evaluate)."""
    from engine.config import load_experiment
    from engine.stages import lab_home, run_experiment

    try:
        exp = load_experiment(experiment)
        target = out or lab_home() / "runs" / exp.name
        outputs = run_experiment(exp, target, progress=not quiet)
    except _user_errors_all() as e:
        _fail(str(e))
    typer.echo(f"done: {Path(target).resolve()} ({', '.join(outputs)})")


@app.command("evaluate")
def evaluate(
    model: Path = typer.Argument(..., help="A model file (model.pt), export folder or checkpoint."),
    data: str = typer.Option(..., "--data", help="Corpus folder or builtin:tiny|demo|full."),
    split: str = typer.Option("test-clean", help="Split to score."),
    decoding: str = typer.Option("greedy", help="greedy, beam or streaming."),
    beam: int = typer.Option(4, help="Beam size for --decoding beam."),
    max_utterances: Optional[int] = typer.Option(None, help="Score only the first N."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """WER with a bootstrap 95% interval, and the model's params, bytes, MACs and RTF."""
    from engine.checkpoint import load_model
    from engine.stages import evaluate_model, model_tokenizer, resolve_corpus

    try:
        m, meta = load_model(model)
        tok = model_tokenizer(meta)
        if tok is None:
            _fail(f"{model}: has no embedded tokenizer (train it with `asrlab train`)")
        corpus = resolve_corpus(data)
        artifact = Path(model) / "model.pt" if Path(model).is_dir() else Path(model)
        res = evaluate_model(m, tok, corpus, split, decoding, beam, max_utterances,
                             artifact=artifact)
    except _user_errors_all() as e:
        _fail(str(e))
    s = res["summary"]
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    typer.echo(f"{split}: WER {s['wer']:.2f}% (95% CI {s['wer_ci'][0]:.2f}-{s['wer_ci'][1]:.2f}) "
               f"on {s['utterances']} utterances | {s['params']:,} params | {s['bytes']:,} bytes | "
               f"{s['macs_per_second'] / 1e6:.1f} M MACs per audio second | RTF {s['rtf']:.4f} "
               f"(1 thread)")


@app.command("compare")
def compare(
    model_a: Path = typer.Argument(..., help="Baseline model file."),
    model_b: Path = typer.Argument(..., help="Model compared against it."),
    data: str = typer.Option(..., "--data", help="Corpus folder or builtin:tiny|demo|full."),
    split: str = typer.Option("test-clean", help="Split to score both on."),
    decoding: str = typer.Option("greedy", help="greedy, beam or streaming."),
    max_utterances: Optional[int] = typer.Option(None, help="Score only the first N."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """WER of B minus WER of A on the same utterances, with a paired-bootstrap 95% interval."""
    from engine.checkpoint import load_model
    from engine.evaluate import UtteranceResult, paired_bootstrap
    from engine.stages import evaluate_model, model_tokenizer, resolve_corpus

    try:
        corpus = resolve_corpus(data)
        runs = []
        for path in (model_a, model_b):
            m, meta = load_model(path)
            tok = model_tokenizer(meta)
            if tok is None:
                _fail(f"{path}: has no embedded tokenizer (train it with `asrlab train`)")
            res = evaluate_model(m, tok, corpus, split, decoding, max_utterances=max_utterances,
                                 accounting_utterances=2)
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


def main() -> None:
    app(prog_name="asrlab")


if __name__ == "__main__":
    sys.exit(main())
