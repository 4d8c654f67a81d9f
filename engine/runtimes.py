"""Scoring an exported sherpa-onnx folder in the runtime that ships it, with the keys the lab's own
evaluation prints (``engine.stages.evaluate_model``), so ONNX and int8 points sit on the Pareto
page beside the PyTorch ones.

Runtimes:

- ``sherpa-onnx``: ``sherpa_onnx.OfflineRecognizer.from_transducer`` on the raw audio; it computes
  its own fbank (kaldi-native-fbank, the settings the lab trains with) and runs greedy search with
  at most one token per encoder frame. This is the deployment runtime.
- ``onnxruntime``: the same three files in onnxruntime sessions, driven from Python on the lab's
  cached features with the same greedy search as sherpa-onnx (one token per frame, blank 0). For
  the sensitivity sweep, and a check that differs from sherpa-onnx only in the features.

Accounting, as for a checkpoint (``engine.compress.accounting``): ``bytes`` are the ONNX files'
bytes (``*.int8.onnx`` with ``int8``); ``params`` those of the exported model (shared tensors
once); ``rtf`` the median of 3 timed passes over the first 20 utterances at 1 thread after a
warm-up, one utterance at a time (for sherpa-onnx it includes its feature extraction, which the
PyTorch figure does not); ``macs_per_second`` is counted by PyTorch's FlopCounterMode on the
same architecture rebuilt from ``asrlab.json``: the encoder's exactly on the real utterances,
the decoder's and joiner's per call times the calls greedy search really made (int8 MACs are
the same multiply-accumulates, in integers).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

RUNTIMES = ("sherpa-onnx", "onnxruntime")


def _files(folder: Path, info: dict, int8: bool) -> dict[str, Path]:
    group = "int8_files" if int8 else "files"
    if int8 and not info.get("int8_files"):
        raise ValueError(f"{folder}: exported without --int8 (no *.int8.onnx files)")
    return {k: folder / v for k, v in info[group].items()}


class OrtTransducer:
    """The three ONNX files in onnxruntime sessions; ``recognize`` is greedy search."""

    def __init__(self, files: dict[str, Path], threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        opts.log_severity_level = 3
        self.sess = {}
        for k, p in files.items():
            try:
                self.sess[k] = ort.InferenceSession(str(p), opts,
                                                    providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime's own exception types
                raise ValueError(f"{p}: onnxruntime cannot load it "
                                 f"({str(e).splitlines()[0][:200]})") from None
        meta = self.sess["decoder"].get_modelmeta().custom_metadata_map
        self.context = int(meta["context_size"])
        self.blank = int(meta.get("blank_id", 0))
        self.calls = {"decoder": 0, "joiner": 0}

    def encode(self, feats: np.ndarray) -> np.ndarray:
        out, lens = self.sess["encoder"].run(None, {
            "x": feats[None].astype(np.float32), "x_lens": np.array([feats.shape[0]], np.int64)})
        return out[0, : int(lens[0])]

    def _decoder(self, hyp: list[int]) -> np.ndarray:
        self.calls["decoder"] += 1
        y = np.array([hyp[-self.context:]], dtype=np.int64)
        return self.sess["decoder"].run(None, {"y": y})[0]

    def recognize(self, feats: np.ndarray) -> list[int]:
        enc = self.encode(feats)
        hyp = [self.blank] * self.context
        dec = self._decoder(hyp)
        joiner = self.sess["joiner"]
        for t in range(enc.shape[0]):
            self.calls["joiner"] += 1
            logit = joiner.run(None, {"encoder_out": enc[t: t + 1], "decoder_out": dec})[0]
            tok = int(logit[0].argmax())
            if tok != self.blank:
                hyp.append(tok)
                dec = self._decoder(hyp)
        return hyp[self.context:]


class SherpaTransducer:
    """sherpa-onnx's offline recognizer over the folder's files; ``recognize`` takes samples."""

    def __init__(self, files: dict[str, Path], tokens: Path, threads: int = 1) -> None:
        import sherpa_onnx

        self.rec = sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=str(files["encoder"]), decoder=str(files["decoder"]),
            joiner=str(files["joiner"]), tokens=str(tokens), num_threads=threads,
            sample_rate=16000, feature_dim=80, decoding_method="greedy_search")
        self.ids = {}
        for line in Path(tokens).read_text().splitlines():
            sym, i = line.rsplit(" ", 1)
            self.ids[sym.replace("\u2581", " ")] = int(i)  # it reports the word mark as a space

    def recognize(self, samples: np.ndarray) -> tuple[str, list[int]]:
        """(sherpa-onnx's text, the token ids it emitted: its result names symbols)."""
        s = self.rec.create_stream()
        s.accept_waveform(16000, samples)
        self.rec.decode_stream(s)
        return s.result.text, [self.ids[t] for t in s.result.tokens]


def _macs(config: dict, feats: list[torch.Tensor], decoder_calls: int, joiner_calls: int,
          audio_seconds: float) -> float:
    from engine.compress.accounting import flop_counter
    from engine.sherpa_graphs import Decoder, Encoder, Joiner
    from engine.models.build import build, from_dict

    model = build(from_dict(config)).for_inference().eval()
    enc, dec, join = Encoder(model), Decoder(model), Joiner(model)
    j = model.cfg.joiner_dim
    with torch.no_grad():
        with flop_counter() as c:
            for f in feats:
                enc(f[None], torch.tensor([f.shape[0]]))
        encoder = c.get_total_flops()
        with flop_counter() as c:
            dec(torch.zeros(1, model.cfg.predictor.context, dtype=torch.long))
        per_dec = c.get_total_flops()
        with flop_counter() as c:
            join(torch.zeros(1, j), torch.zeros(1, j))
        per_join = c.get_total_flops()
    return (encoder + decoder_calls * per_dec + joiner_calls * per_join) / 2.0 / audio_seconds


def evaluate_exported(folder: Path, corpus: Path, split: str, runtime: str = "sherpa-onnx",
                      int8: bool = False, max_utterances: int | None = None,
                      accounting: bool = True, accounting_utterances: int = 20,
                      repeats: int = 3) -> dict:
    """``{"summary", "utterances"}`` as ``evaluate_model`` returns, for an exported folder."""
    from engine.data.batching import accounting_sample, audio_of, cut_text
    from engine.data.features import split_features
    from engine.evaluate import score_utterance, summarize
    from engine.sherpa_graphs import read_sherpa_folder

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    folder = Path(folder)
    info = read_sherpa_folder(folder)
    files = _files(folder, info, int8)
    tokens = folder / "tokens.txt"
    if not tokens.exists():
        raise FileNotFoundError(f"{tokens}: missing (the export writes it from the model's "
                                f"tokenizer)")
    from engine.data.tokenizer import Tokenizer

    tok = Tokenizer(proto=(folder / "tokenizer.model").read_bytes())
    cuts = split_features(corpus, split)
    if max_utterances:
        from engine.data.batching import first_or_spread

        cuts = first_or_spread(cuts, split, max_utterances)
    cuts = list(cuts)
    if not cuts:
        raise ValueError(f"{corpus}: split {split!r} has no utterances")
    if runtime == "sherpa-onnx":
        engine = SherpaTransducer(files, tokens)

        def inputs(c):
            return c.load_audio()[0].astype(np.float32)

        def run(x):
            return engine.recognize(x)[1]
    else:
        engine = OrtTransducer(files)

        def inputs(c):
            return np.asarray(c.load_features(), dtype=np.float32)

        def run(x):
            return engine.recognize(x)
    results, rows_audio, feats_acc = [], {}, []
    ort_calls = OrtTransducer(files) if accounting else None  # counts the calls for MACs
    dec_calls = join_calls = 0
    for c in cuts:
        ids = run(inputs(c))
        results.append(score_utterance(c.id, cut_text(c), tok.decode(ids)))
        rows_audio[c.id] = audio_of(c)
    summary = summarize(results)
    summary.update({"split": split, "decoding": "greedy", "accounting_search": "greedy",
                    "runtime": f"{runtime}-int8" if int8 else runtime,
                    "format": "sherpa-onnx-int8" if int8 else "sherpa-onnx-fp32",
                    "fp32_modules": info.get("fp32_modules", []) if int8 else None,
                    "params": info["params"], "nonzero_params": info["nonzero_params"],
                    "bytes": sum(p.stat().st_size for p in files.values()),
                    "macs_per_second": None, "rtf": None})
    if accounting:
        sample = accounting_sample(cuts, accounting_utterances)  # as evaluate_model's
        summary["accounting_cuts"] = [c.id for c in sample]
        xs = [inputs(c) for c in sample]
        audio = sum(c.duration for c in sample)
        for c in sample:
            f = np.asarray(c.load_features(), dtype=np.float32)
            feats_acc.append(torch.from_numpy(f))
            ort_calls.recognize(f)
        dec_calls, join_calls = ort_calls.calls["decoder"], ort_calls.calls["joiner"]
        frames = sum(f.shape[0] for f in feats_acc) / 100.0
        summary["macs_per_second"] = round(_macs(info["config"], feats_acc, dec_calls,
                                                 join_calls, frames))
        for x in xs[:2]:  # warm-up
            run(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x in xs:
                run(x)
            times.append(time.perf_counter() - t0)
        summary.update({"rtf": round(statistics.median(times) / audio, 5),
                        "rtf_utterances": len(sample), "rtf_audio_seconds": round(audio, 2)})
    rows = [{**r.to_dict(), **rows_audio[r.cut_id]} for r in results]
    return {"summary": summary, "utterances": rows}
