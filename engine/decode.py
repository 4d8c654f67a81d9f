"""Transducer search as free functions (icefall's naming): ``greedy_search`` (batched),
``modified_beam_search`` (at most one symbol per frame, Kang et al. / icefall), and
``streaming_greedy_search`` (chunk by chunk through the encoder's caches; the same result as
``greedy_search`` on the streaming-masked encoder output).

All take encoder output (B, T, d) with lengths (B,) and return token-id lists.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.models.transducer import Transducer


def _step_pred(model: Transducer, tokens: Tensor, state):
    """Predictor output for one new token per row: tokens (N,) -> projected (N, J), state."""
    pred, state = model.predict(tokens[:, None], state)
    return model.project_pred(pred[:, 0]), state


def _select_state(state, idx: Tensor):
    if state is None:
        return None
    if isinstance(state, tuple):  # LSTM (h, c): (layers, N, H)
        return tuple(s[:, idx] for s in state)
    return state[idx]


def _merge_state(old, new, mask: Tensor):
    """Rows where ``mask`` take ``new``."""
    if isinstance(old, tuple):
        return tuple(torch.where(mask[None, :, None], n, o) for o, n in zip(old, new))
    return torch.where(mask[:, None], new, old)


@torch.no_grad()
def greedy_search(model: Transducer, enc: Tensor, enc_lens: Tensor, max_symbols: int = 3
                  ) -> list[list[int]]:
    """Batched greedy search: at each frame emit the argmax until blank (at most max_symbols)."""
    b = enc.shape[0]
    blank = model.cfg.blank
    enc_p = model.project_enc(enc)
    hyps: list[list[int]] = [[] for _ in range(b)]
    pred, state = _step_pred(model, enc.new_full((b,), blank, dtype=torch.long), None)
    for t in range(enc.shape[1]):
        active = enc_lens > t
        if not bool(active.any()):
            break
        for _ in range(max_symbols):
            logits = model.join(enc_p[:, t], pred)
            tok = logits.argmax(-1)
            emit = active & (tok != blank)
            if not bool(emit.any()):
                break
            for i in emit.nonzero()[:, 0].tolist():
                hyps[i].append(int(tok[i]))
            new_pred, new_state = _step_pred(model, torch.where(emit, tok, blank), state)
            pred = torch.where(emit[:, None], new_pred, pred)
            state = _merge_state(state, new_state, emit) if state is not None else new_state
            active = emit
    return hyps


@torch.no_grad()
def modified_beam_search(model: Transducer, enc: Tensor, enc_lens: Tensor, beam: int = 4
                         ) -> list[list[int]]:
    """Beam search with at most one symbol per frame; hypotheses with equal tokens merge
    (log-add). Runs per utterance, all hypotheses of a frame in one batch."""
    return [nbest[0][0] for nbest in modified_beam_search_nbest(model, enc, enc_lens, beam)]


@torch.no_grad()
def modified_beam_search_nbest(model: Transducer, enc: Tensor, enc_lens: Tensor, beam: int = 4
                               ) -> list[list[tuple[list[int], float]]]:
    """``modified_beam_search``'s final beam of each utterance: (tokens, RNN-T log-probability)
    pairs, best first (the first pass of a two-pass model)."""
    blank = model.cfg.blank
    out = []
    for i in range(enc.shape[0]):
        enc_p = model.project_enc(enc[i, : int(enc_lens[i])])
        pred, state = _step_pred(model, enc.new_full((1,), blank, dtype=torch.long), None)
        hyps = [((), 0.0)]  # (tokens, log prob)
        preds, states = pred, state
        for t in range(enc_p.shape[0]):
            logp = model.join(enc_p[t][None], preds).log_softmax(-1)  # (H, V)
            scores = logp.new_tensor([h[1] for h in hyps])[:, None] + logp
            top = scores.flatten().topk(min(beam * 2, scores.numel()))
            merged: dict[tuple, tuple[float, int, int]] = {}
            v = logp.shape[1]
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                h, tok = divmod(flat, v)
                toks = hyps[h][0] if tok == blank else hyps[h][0] + (tok,)
                if toks in merged:
                    old = merged[toks]
                    merged[toks] = (float(torch.logaddexp(torch.tensor(old[0]),
                                                          torch.tensor(score))), old[1], old[2])
                else:
                    merged[toks] = (score, h, tok)
            best = sorted(merged.items(), key=lambda kv: -kv[1][0])[:beam]
            src = torch.tensor([h for _, (_, h, _) in best], device=enc.device)
            toks = torch.tensor([tok for _, (_, _, tok) in best], device=enc.device)
            preds, states = preds[src], _select_state(states, src)
            emit = toks != blank
            if bool(emit.any()):
                new_pred, new_state = _step_pred(model, torch.where(emit, toks, blank), states)
                preds = torch.where(emit[:, None], new_pred, preds)
                states = _merge_state(states, new_state, emit)
            hyps = [(t_, s) for t_, (s, _, _) in best]
        out.append([(list(t_), float(s)) for t_, s in sorted(hyps, key=lambda h: -h[1])])
    return out


@torch.no_grad()
def two_pass(model: Transducer, enc: Tensor, enc_lens: Tensor, nbest: int = 4,
             las_lambda: float = 0.5) -> tuple[list[dict], dict]:
    """First pass: the n-best of modified beam search with RNN-T scores; second pass: every
    hypothesis of every utterance scored by the LAS rescorer in one batch under teacher forcing,
    and the best of ``lambda * las + (1 - lambda) * rnnt`` chosen. Returns per utterance
    {"first", "second", "chosen", "nbest": [{"tokens", "rnnt", "las", "score"}]} and the seconds
    each pass took ({"first_pass_s", "rescore_s"})."""
    import time

    if model.las is None:
        raise ValueError("two-pass decoding needs a model with a LAS rescorer (las_train)")
    t0 = time.perf_counter()
    lists = modified_beam_search_nbest(model, enc, enc_lens, nbest)
    t1 = time.perf_counter()
    rows = [(i, toks, s) for i, lst in enumerate(lists) for toks, s in lst]
    idx = torch.tensor([i for i, _, _ in rows], dtype=torch.long, device=enc.device)
    las = model.las.score(enc[idx], enc_lens[idx], [t for _, t, _ in rows]).tolist() \
        if rows else []
    t2 = time.perf_counter()
    out, k = [], 0
    for lst in lists:
        cands = []
        for toks, s in lst:
            cands.append({"tokens": toks, "rnnt": s, "las": las[k],
                          "score": las_lambda * las[k] + (1 - las_lambda) * s})
            k += 1
        chosen = max(range(len(cands)), key=lambda j: cands[j]["score"])
        out.append({"first": cands[0]["tokens"], "second": cands[chosen]["tokens"],
                    "chosen": chosen, "nbest": cands})
    return out, {"first_pass_s": t1 - t0, "rescore_s": t2 - t1}


@torch.no_grad()
def streaming_greedy_search(model: Transducer, feats: Tensor, feat_lens: Tensor,
                            chunk_frames: int | None = None) -> list[list[int]]:
    """Greedy search fed chunk by chunk: features (B, T, 80) arrive ``chunk_frames`` at a time
    (default: one attention chunk), the encoder runs on its caches, and the predictor state carries
    over. One utterance at a time (streams have their own lengths)."""
    cfg = model.cfg.encoder
    if not (cfg.chunk_size > 0 and cfg.causal):
        raise ValueError("streaming decoding needs a streaming model (causal, chunked: train it "
                         "with streaming = true); this model attends to the full utterance")
    step = chunk_frames or cfg.chunk_size * 4
    out = []
    for i in range(feats.shape[0]):
        x = feats[i : i + 1, : int(feat_lens[i])]
        state, enc_chunks = None, []
        for s in range(0, x.shape[1], step):
            h, state = model.encoder.forward_chunk(x[:, s : s + step], state)
            enc_chunks.append(h)
        h, state = model.encoder.forward_chunk(x[:, :0], state, final=True)
        enc_chunks.append(h)
        enc = torch.cat(enc_chunks, 1)
        out += greedy_search(model, enc, torch.tensor([enc.shape[1]], device=enc.device))
    return out


def decode(model: Transducer, feats: Tensor, feat_lens: Tensor, method: str = "greedy",
           beam: int = 4) -> list[list[int]]:
    if method == "streaming":
        return streaming_greedy_search(model, feats, feat_lens)
    enc, enc_lens = model.encode(feats, feat_lens)
    if method == "greedy":
        return greedy_search(model, enc, enc_lens)
    if method == "beam":
        return modified_beam_search(model, enc, enc_lens, beam)
    if method == "twopass":
        return [r["second"] for r in two_pass(model, enc, enc_lens, beam)[0]]
    raise ValueError(f"unknown decoding method {method!r}; expected greedy, beam, twopass or "
                     f"streaming")

