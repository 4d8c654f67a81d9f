"""Deployable artifacts; their file sizes are the sizes the lab reports.

``export_torch``: one self-contained file ``model.pt`` (config with every block's real sizes,
fp32 weights, the embedded tokenizer) plus ``tokens.txt`` beside it. A tensor with enough zeros
(a magnitude-pruned model) is stored as a bitmask plus its non-zero values, so the file's bytes
are what the sparsity really saves (``format`` says ``torch-fp32-sparse``). Loadable with
``engine.checkpoint.load_model`` (``weights_only=True``).

``export_sherpa_onnx``: the three files sherpa-onnx's transducer runtime loads, as icefall writes
them: ``encoder.onnx`` (x (N, T, 80) raw fbank, x_lens (N,) -> encoder_out (N, T', J) already
projected to the joiner, encoder_out_lens), ``decoder.onnx`` (y (N, context_size) int64 ->
decoder_out (N, J), projected), ``joiner.onnx`` (encoder_out (N, J), decoder_out (N, J) -> logit
(N, V)), ``tokens.txt``, and the metadata sherpa-onnx reads (decoder: ``vocab_size``,
``context_size``; encoder: ``model_type`` and the lab's own keys). With ``int8`` also
``*.int8.onnx`` from onnxruntime's dynamic quantization (MatMul only; the module types a
sensitivity sweep keeps fp32 are left out: ``engine.compress.quantize``). ``asrlab.json`` says what
the folder holds (config, sizes, files, which modules stayed fp32), so ``asrlab evaluate DIR``
can score it. Shared blocks are one set of initializers, used by every layer that runs them.
Every export is checked: onnxruntime's encoder output on an input of another length than the
traced one must match PyTorch's.

Only a **stateless** predictor exports: sherpa-onnx feeds the decoder the last ``context_size``
tokens and keeps no recurrent state, so an LSTM predictor is refused. sherpa-onnx pads the first
context with -1 in some versions and with the blank in others; the exported decoder maps -1 to
the blank the model was trained with, so both give the training-time start.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from engine.checkpoint import load_model, pack_sparse, save_model
from engine.compress.quantize import MODULE_TYPES, present_types, quantize_onnx
from engine.config import SHERPA_FORMAT_VERSION
from engine.models.build import to_dict
from engine.data.tokenizer import Tokenizer
from engine.sherpa_graphs import FRAME_REPEAT, Decoder, Encoder, Joiner


def refuse_own_folder(model_path: Path, out_dir: Path) -> None:
    """An export never writes where its input lies: ``--out M`` for ``M/model.pt`` (or for a
    checkpoint under ``M``) would replace the training model with its deployable form."""
    src = Path(model_path).resolve()
    src = src / "model.pt" if src.is_dir() else src
    out = Path(out_dir).resolve()
    if out in src.parents:
        raise ValueError(f"--out {out_dir}: it holds the model being exported ({model_path}), "
                         f"which the export would write over or beside; choose another folder")


def export_torch(model_path: Path, out_dir: Path) -> dict:
    refuse_own_folder(model_path, out_dir)
    model, meta = load_model(model_path)  # inference form: no training-only heads
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in meta.items() if k in ("tokenizer", "step", "corpus", "twopass")}
    _, sparse = pack_sparse(model.state_dict())
    artifact = save_model(model, out_dir / "model.pt", keep, sparse=bool(sparse))
    if "tokenizer" in meta:
        tok = Tokenizer(proto=bytes(meta["tokenizer"].numpy().tobytes()))
        (out_dir / "tokens.txt").write_text(tok.tokens_txt())
    return {"artifact": str(artifact), "bytes": artifact.stat().st_size,
            "format": "torch-fp32-sparse" if sparse else "torch-fp32",
            "sparse_tensors": len(sparse)}


# ----- sherpa-onnx ------------------------------------------------------------------------------
OPSET = 17


class LSTMNotExportable(ValueError):
    pass


def exportable(model) -> None:
    """Raise with the reason when sherpa-onnx cannot run ``model``."""
    kind = model.cfg.predictor.kind
    if kind != "stateless":
        raise LSTMNotExportable(
            f"predictor kind {kind!r} cannot be exported to sherpa-onnx: its transducer runtime "
            f"feeds the decoder the last context_size tokens and carries no recurrent state, "
            f"so an LSTM predictor has no way to get its (h, c). Train the model with "
            f"[stages.model] predictor = \"stateless\" (the presets' default).")


def _fold_identities(m) -> int:
    """Point every user of ``Identity(initializer)`` at the initializer itself and drop the
    Identity nodes. The exporter writes a tensor used by several layers (a shared block) once
    and feeds the later uses through Identity nodes; onnxruntime's quantizer then sees those
    MatMuls' weights as activations and leaves them fp32, keeping an fp32 copy beside the int8
    one. Folded, every use names one initializer, quantized once."""
    inits = {i.name for i in m.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in m.graph.node
             if n.op_type == "Identity" and n.input[0] in inits}
    outputs = {o.name for o in m.graph.output}
    alias = {k: v for k, v in alias.items() if k not in outputs}
    for n in m.graph.node:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    keep = [n for n in m.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    return len(alias)


def compact_names(path: Path) -> None:
    """Rename the nodes, initializers and intermediate tensors of an ONNX file to short ids (the
    graph's inputs and outputs keep their names): the exporter's module-path names cost about
    150 bytes a node, a sixth of a small int8 encoder. Run after quantization, which reads the
    module types from those names."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output} | {""}
    names: dict[str, str] = {}

    def short(name: str, prefix: str) -> str:
        if name in keep:
            return name
        if name not in names:
            names[name] = f"{prefix}{len(names):x}"
        return names[name]

    for init in g.initializer:
        init.name = short(init.name, "w")
    for i, n in enumerate(g.node):
        n.name = f"n{i:x}"
        for j, name in enumerate(n.input):
            n.input[j] = short(name, "t")
        for j, name in enumerate(n.output):
            n.output[j] = short(name, "t")
    for v in g.value_info:
        v.name = short(v.name, "t")
    onnx.save(m, str(path))


def _add_meta(path: Path, meta: dict) -> None:
    import onnx

    m = onnx.load(str(path))
    _fold_identities(m)
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))


def _verify(path: Path, module: nn.Module, inputs: tuple, names: list[str]) -> float:
    """Largest difference between onnxruntime's and PyTorch's first output on ``inputs``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    with torch.no_grad():
        want = module(*inputs)
    want = want[0] if isinstance(want, tuple) else want
    return float((torch.from_numpy(got) - want).abs().max())


def export_sherpa_onnx(model_path: Path, out_dir: Path, int8: bool = False,
                       fp32_modules: list[str] | tuple = (), sensitivity: dict | None = None,
                       compact: bool = True) -> dict:
    """Write the sherpa-onnx folder for the model file ``model_path`` (see the module doc)."""
    import warnings

    model, meta = load_model(model_path)
    exportable(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    ctx_size = cfg.predictor.context
    enc_m, dec_m, join_m = Encoder(model).eval(), Decoder(model).eval(), Joiner(model).eval()
    torch.manual_seed(0)
    x, x_lens = torch.randn(1, 200, cfg.encoder.input_dim), torch.tensor([200])
    y = torch.zeros(1, ctx_size, dtype=torch.long)
    with torch.no_grad():
        e = enc_m(x, x_lens)[0][:, 0]
        d = dec_m(y)
    specs = {
        "encoder": (enc_m, (x, x_lens), ["x", "x_lens"], ["encoder_out", "encoder_out_lens"],
                    {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"},
                     "encoder_out_lens": {0: "N"}}),
        "decoder": (dec_m, (y,), ["y"], ["decoder_out"], {"y": {0: "N"}, "decoder_out": {0: "N"}}),
        "joiner": (join_m, (e, d), ["encoder_out", "decoder_out"], ["logit"],
                   {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}}),
    }
    files = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape asserts and int() casts
        for name, (mod, args, ins, outs, axes) in specs.items():
            path = out_dir / f"{name}.onnx"
            torch.onnx.export(mod, args, str(path), input_names=ins, output_names=outs,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
            files[name] = path
    common = {"model_author": "asr-compression-lab", "vocab_size": cfg.vocab_size,
              "context_size": ctx_size, "joiner_dim": cfg.joiner_dim, "blank_id": cfg.blank}
    _add_meta(files["encoder"], {
        **common, "model_type": "conformer", "version": "1",
        "comment": "asrlab conformer transducer, non-streaming graph; every encoder frame "
                   f"repeated {FRAME_REPEAT} times (up to {FRAME_REPEAT} tokens a frame)",
        "frame_repeat": FRAME_REPEAT,
        "subsampling_factor": (8 if cfg.encoder.reduce_after is not None else 4),
        "layers": cfg.encoder.n_layers, "blocks": len(cfg.encoder.blocks)})
    _add_meta(files["decoder"], common)
    _add_meta(files["joiner"], common)
    # the trace must hold for other lengths than the traced one
    x2, l2 = torch.randn(2, 331, cfg.encoder.input_dim), torch.tensor([331, 250])
    err = _verify(files["encoder"], enc_m, (x2, l2), ["x", "x_lens"])
    if not err < 1e-3:
        raise RuntimeError(f"{files['encoder']}: onnxruntime differs from PyTorch by {err:.2e} "
                           f"on a 331-frame input; the export is wrong")
    y2 = torch.tensor([[-1] * (ctx_size - 1) + [3], [5] * ctx_size])
    err_d = _verify(files["decoder"], dec_m, (y2,), ["y"])
    if not err_d < 1e-4:
        raise RuntimeError(f"{files['decoder']}: onnxruntime differs from PyTorch by {err_d:.2e}")
    tok = None
    if "tokenizer" in meta:
        tok = Tokenizer(proto=bytes(meta["tokenizer"].numpy().tobytes()))
        (out_dir / "tokens.txt").write_text(tok.tokens_txt())
        (out_dir / "tokenizer.model").write_bytes(tok.proto())
    out = {"format": "sherpa-onnx", "format_version": SHERPA_FORMAT_VERSION,
           "frame_repeat": FRAME_REPEAT, "int8": bool(int8), "source": str(model_path),
           "config": to_dict(model.config()), "step": int(meta.get("step") or 0),
           "params": sum(p.numel() for p in model.parameters()),
           "nonzero_params": sum(int(torch.count_nonzero(p)) for p in model.parameters()),
           "files": {k: p.name for k, p in files.items()},
           "bytes": sum(p.stat().st_size for p in files.values()),
           "verify_max_abs_diff": err}
    if int8:
        out["fp32_modules"] = sorted(fp32_modules)
        out["int8_files"] = {}
        for name, path in files.items():
            q = out_dir / f"{name}.int8.onnx"
            quantize_onnx(path, q, keep_fp32=fp32_modules)
            if compact:
                compact_names(q)
            out["int8_files"][name] = q.name
        out["int8_bytes"] = sum((out_dir / f).stat().st_size for f in out["int8_files"].values())
    for path in files.values() if compact else ():
        compact_names(path)
    out["bytes"] = sum(p.stat().st_size for p in files.values())
    if sensitivity is not None:
        out["sensitivity"] = sensitivity
    (out_dir / "asrlab.json").write_text(json.dumps(out, indent=2))
    return {**{k: v for k, v in out.items() if k != "config"}, "artifact": str(out_dir)}


def export_for_sherpa(model_path: Path, out_dir: Path, int8: bool = False, keep_fp32=(),
                      sensitivity_corpus: Path | None = None, tolerance: float = 0.5,
                      utterances: int = 100, log=print) -> dict:
    """``export_sherpa_onnx``, after a sensitivity sweep on ``sensitivity_corpus``'s dev split
    when one is given: the module types it finds too costly join ``keep_fp32``."""
    if sensitivity_corpus is None:
        return export_sherpa_onnx(model_path, out_dir, int8=int8, fp32_modules=keep_fp32)
    if not int8:
        raise ValueError("a sensitivity sweep decides what int8 keeps fp32; ask for int8 too")
    export_sherpa_onnx(model_path, out_dir, compact=False)  # the sweep reads module names
    sweep = sensitivity_sweep(out_dir, sensitivity_corpus, "dev", utterances, tolerance, log=log)
    keep = sorted(set(keep_fp32) | set(sweep["keep_fp32"]))
    return export_sherpa_onnx(model_path, out_dir, int8=True, fp32_modules=keep,
                              sensitivity=sweep)


def sensitivity_sweep(folder: Path, corpus: Path, split: str = "dev",
                      max_utterances: int | None = 100, tolerance: float = 0.5,
                      log=print) -> dict:
    """WER on ``split`` of the fp32 export and of each one-module-type-int8 variant, and the
    paired-bootstrap interval of each difference; a type stays fp32 (``keep_fp32``) when its
    int8 costs more than ``tolerance`` points **and** the interval excludes no loss: on a
    100-utterance dev set a difference of a word or two is noise, and keeping a type fp32 on
    noise costs real bytes (it kept the teacher's int8 files at 48% of fp32 instead of 28%)."""
    from engine.evaluate import UtteranceResult, paired_bootstrap
    from engine.runtimes import evaluate_exported

    def scored(where, int8):
        res = evaluate_exported(where, corpus, split, "onnxruntime", int8=int8,
                                max_utterances=max_utterances, accounting=False)
        keys = UtteranceResult.__dataclass_fields__
        return res["summary"]["wer"], [UtteranceResult(**{k: u[k] for k in keys})
                                       for u in res["utterances"]]

    folder = Path(folder)
    base, base_utts = scored(folder, False)
    log(f"sensitivity on {split}: fp32 WER {base:.2f}%")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="asrlab-sens-") as tmp:
        work = Path(tmp)
        for f in folder.iterdir():
            if f.suffix in (".onnx", ".txt", ".json", ".model") and ".int8." not in f.name:
                shutil.copy(f, work / f.name)
        info = json.loads((work / "asrlab.json").read_text())
        info["int8_files"] = {n: f"{n}.int8.onnx" for n in ("encoder", "decoder", "joiner")}
        (work / "asrlab.json").write_text(json.dumps(info))
        types = present_types(work)
        for kind in types:
            for name in ("encoder", "decoder", "joiner"):
                quantize_onnx(work / f"{name}.onnx", work / f"{name}.int8.onnx",
                              keep_fp32=[k for k in MODULE_TYPES if k != kind])
            wer, utts = scored(work, True)
            d = paired_bootstrap(base_utts, utts)
            rows[kind] = {"wer": wer, "delta": round(wer - base, 3),
                          "delta_ci": [round(x, 3) for x in d["ci"]]}
            log(f"  int8 {kind}: WER {wer:.2f}% ({wer - base:+.2f}, 95% interval "
                f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}])")
    keep = [k for k, r in rows.items() if r["delta"] > tolerance and r["delta_ci"][0] > 0]
    return {"split": split, "utterances": max_utterances, "fp32_wer": base,
            "tolerance": tolerance, "types": rows, "keep_fp32": keep}
