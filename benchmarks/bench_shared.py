"""Weight sharing, sparsity and int8 in sherpa-onnx: what each step buys. Reads a finished run of
``experiments/shared_quant.toml`` or ``experiments/ten_x.toml`` from the store and reports, on
test-clean:

- each model's parameters and bytes as PyTorch file (sparse-aware), sherpa-onnx fp32 and int8;
- its WER in PyTorch, in sherpa-onnx fp32 and int8 (95% intervals), and the paired-bootstrap
  difference int8 - fp32 on the same utterances;
- each step's ratio (sharing, sparsity, int8) next to the paper's (Gao et al., Interspeech 2021);
- the int8 speed-up at 1 thread in sherpa-onnx, **measured here side by side**: fp32 and int8
  decoded alternately on the same 20 utterances, 5 rounds, medians (icefall reports RTF 0.043 ->
  0.027, 1.6x); the per-stage RTFs in the store were measured at different times;
- for ten-x: bytes against the teacher's fp32 ONNX files and relative WER, against the target
  (10x fewer bytes within 5% relative WER).

``python benchmarks/bench_shared.py --experiment shared-quant|ten-x [--run RUN_ID] [--submit]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import report  # noqa: E402
from bench_progressive import pick_run, utterances  # noqa: E402

from engine.evaluate import paired_bootstrap  # noqa: E402
from engine.stages import lab_home  # noqa: E402
from engine.store import read  # noqa: E402

MODELS = {"shared-quant": ["teacher", "base6", "share3", "share2", "share3-sparse"],
          "ten-x": ["teacher", "share3-l0", "tshare2", "tshare2-l0"]}
PAPER = ("paper (Gao et al. 2021): sharing + sparsification + quantization, more than 10x "
         "smaller, CER 6.49 -> 6.92 (+6.6% relative)")


def evals_of(db: Path, run: str) -> dict[str, dict]:
    """eval stage -> its test-clean row, following stages reused from another run."""
    rows = read(db, """
        WITH src AS (
            SELECT name, coalesce(split_part(reused_from, '/', 1), run_id) AS src_run,
                   coalesce(split_part(reused_from, '/', 2), name) AS src_stage
            FROM stages WHERE run_id = ? AND kind = 'evaluate')
        SELECT src.name, src.src_run, src.src_stage, e.split, e.wer, e.wer_lo, e.wer_hi,
               e.bytes, e.params, e.nonzero_params, e.rtf, e.utterances,
               coalesce(e.runtime, 'torch') AS runtime
        FROM src JOIN evals e ON e.run_id = src.src_run AND e.stage = src.src_stage
        WHERE e.split = 'test-clean'""", [run])
    return {r["name"]: r for r in rows}


def onnx_dirs(db: Path, run: str) -> dict[str, Path]:
    rows = read(db, """SELECT s.name, s.outputs, s.reused_from FROM stages s
                       WHERE s.run_id = ? AND s.kind = 'export'""", [run])
    out = {}
    for r in rows:
        o = json.loads(r["outputs"] or "{}")
        if not o.get("onnx_dir") and r["reused_from"]:
            src_run, src_stage = r["reused_from"].split("/", 1)
            o = json.loads(read(db, "SELECT outputs FROM stages WHERE run_id = ? AND name = ?",
                                [src_run, src_stage])[0]["outputs"] or "{}")
        if o.get("onnx_dir"):
            out[r["name"].removeprefix("onnx-")] = Path(o["onnx_dir"])
    return out


def side_by_side_rtf(folder: Path, corpus: Path, n: int = 20, rounds: int = 5) -> tuple:
    """(fp32 RTF, int8 RTF): sherpa-onnx at 1 thread, alternating, medians of ``rounds``."""
    from engine.runtimes import SherpaTransducer, _files
    from engine.sherpa_graphs import read_sherpa_folder
    from engine.data.features import split_features

    info = read_sherpa_folder(folder)
    cuts = list(split_features(corpus, "test-clean"))[:n]
    audio = [c.load_audio()[0].astype("float32") for c in cuts]
    seconds = sum(c.duration for c in cuts)
    recs = {q: SherpaTransducer(_files(folder, info, q), folder / "tokens.txt") for q in (0, 1)}
    for r in recs.values():
        for a in audio[:2]:
            r.recognize(a)
    times = {0: [], 1: []}
    for _ in range(rounds):
        for q, r in recs.items():
            t0 = time.perf_counter()
            for a in audio:
                r.recognize(a)
            times[q].append(time.perf_counter() - t0)
    return tuple(statistics.median(times[q]) / seconds for q in (0, 1))


def fmt_wer(e: dict | None) -> str:
    if not e:
        return "n/a"
    return f"{e['wer']:.1f}% [{e['wer_lo']:.1f}, {e['wer_hi']:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="shared-quant", choices=sorted(MODELS))
    ap.add_argument("--run")
    ap.add_argument("--submit", action="store_true")
    a = ap.parse_args()
    home = lab_home()
    db = home / "lab.duckdb"
    a.run = pick_run(db, a.experiment, a.run, a.submit)
    ev = evals_of(db, a.run)
    dirs = onnx_dirs(db, a.run)
    corpus = Path(json.loads(read(db, "SELECT config FROM runs WHERE run_id = ?",
                                  [a.run])[0]["config"])["data"]["corpus"])
    if str(corpus).startswith("builtin:"):
        corpus = home / "corpora" / str(corpus).split(":", 1)[1]
    rows, figures = [], {}
    for m in MODELS[a.experiment]:
        t, f, q = ev.get(f"eval-{m}"), ev.get(f"eval-{m}-sherpa"), ev.get(f"eval-{m}-sherpa-int8")
        if not (t and f and q):
            rows.append((m, "not evaluated in this run (yet)"))
            continue
        figures[m] = {"torch": t, "fp32": f, "int8": q}
        d = paired_bootstrap(utterances(db, (f["src_run"], f["src_stage"]), "test-clean"),
                             utterances(db, (q["src_run"], q["src_stage"]), "test-clean"))
        kept = json.loads((dirs[m] / "asrlab.json").read_text()).get("fp32_modules") if m in dirs else None
        rows.append((f"{m}: size", f"{t['params']:,} params ({t['nonzero_params']:,} non-zero); "
                     f"model.pt {t['bytes']:,} B, ONNX fp32 {f['bytes']:,} B, ONNX int8 "
                     f"{q['bytes']:,} B (int8 {q['bytes'] / f['bytes']:.2f}x of fp32; kept fp32: "
                     f"{', '.join(kept) if kept else 'none'})"))
        rows.append((f"{m}: WER test-clean", f"PyTorch {fmt_wer(t)}, sherpa-onnx fp32 "
                     f"{fmt_wer(f)}, int8 {fmt_wer(q)}; int8 - fp32 {d['delta']:+.2f} "
                     f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}] on {d['utterances']} utterances"))
        if m in dirs:
            r32, r8 = side_by_side_rtf(dirs[m], corpus)
            figures[m]["rtf"] = (r32, r8)
            rows.append((f"{m}: RTF sherpa-onnx, 1 thread, side by side",
                         f"fp32 {r32:.4f}, int8 {r8:.4f} ({r32 / r8:.2f}x; icefall 0.043 -> "
                         f"0.027, 1.59x); PyTorch greedy (stage, 1 thread) {t['rtf']:.4f}"))
    if a.experiment == "shared-quant" and {"base6", "share3", "share2"} <= set(figures):
        b = figures["base6"]
        for m, k in (("share3", 2), ("share2", 3)):
            s = figures[m]
            rows.append((f"step: sharing, 6 layers over {6 // k} blocks",
                         f"params {b['torch']['params'] / s['torch']['params']:.2f}x fewer, ONNX "
                         f"fp32 bytes {b['fp32']['bytes'] / s['fp32']['bytes']:.2f}x (paper: 12 "
                         f"layers over {12 // k}, {k}x fewer encoder-layer parameters by "
                         f"construction); WER {s['torch']['wer'] - b['torch']['wer']:+.1f} points"))
        if "share3-sparse" in figures:
            s, p = figures["share3"], figures["share3-sparse"]
            rows.append(("step: + 60% magnitude sparsity",
                         f"model.pt {s['torch']['bytes'] / p['torch']['bytes']:.2f}x smaller "
                         f"(bitmask + values), ONNX {s['fp32']['bytes'] / p['fp32']['bytes']:.2f}x "
                         f"(ONNX stores weights dense: sparsity saves sherpa-onnx nothing); WER "
                         f"{p['torch']['wer'] - s['torch']['wer']:+.1f} points"))
        for m in ("share3", "share2"):
            s = figures[m]
            rows.append((f"step: int8 ({m})", f"ONNX {s['fp32']['bytes'] / s['int8']['bytes']:.2f}x "
                         f"smaller, WER {s['int8']['wer'] - s['fp32']['wer']:+.1f} points"))
    if "teacher" in figures:
        tb = figures["teacher"]["fp32"]["bytes"]
        tw = figures["teacher"]["fp32"]["wer"]
        for m, f in figures.items():
            if m == "teacher":
                continue
            ratio = tb / f["int8"]["bytes"]
            rel = 100 * (f["int8"]["wer"] - tw) / tw
            verdict = "met" if ratio >= 10 and rel <= 5 else "missed"
            rows.append((f"{m} int8 against the teacher's fp32 (sherpa-onnx)",
                         f"{ratio:.1f}x fewer bytes, WER {f['int8']['wer']:.1f}% vs "
                         f"{tw:.1f}% ({rel:+.1f}% relative); target 10x within 5% relative: "
                         f"{verdict}"))
    if any("rtf" in f for f in figures.values()):
        ups = [f["rtf"][0] / f["rtf"][1] for f in figures.values() if "rtf" in f]
        rows.append(("int8 speed-up, sherpa-onnx 1 thread", f"median {statistics.median(ups):.2f}x "
                     f"over {len(ups)} models (icefall: 1.59x)"))
    rows.append(("reference", PAPER))
    report(f"Sharing, sparsity, int8 in sherpa-onnx: {a.experiment} (run {a.run})",
           f"`benchmarks/bench_shared.py --experiment {a.experiment}`", rows)


if __name__ == "__main__":
    main()
