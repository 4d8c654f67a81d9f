"""Knowledge distillation for transducers, in one place.

- ``full_kd``: KL(teacher || student) over the whole vocabulary at every valid lattice node
  (t, u), with a temperature tau (the term is scaled by tau^2, as Hinton et al.).
- ``yblank_kd``: the efficient RNN-T distillation of Panchapagesan et al. (ICASSP 2021,
  arXiv 2011.06110): at each node only three posteriors are matched, P(y) of the next reference
  token, P(blank) and P(rest) = 1 - P(y) - P(blank); at u = U (no next token) only blank and rest.
  P(rest) is a log-sum-exp over the other tokens, never ``log(1 - p_y - p_blank)``, so it keeps
  its precision when the two are close to 1. With a temperature tau both sides' posteriors come
  from logits / tau and the term is scaled by tau^2, as for full KD (tau = 1: the paper's loss).
  The teacher is reduced to (..., 3) before it meets
  the student (a few frames at a time, inside its no-grad pass), so the teacher costs O(T x U x 3)
  beyond one chunk of its joiner output.
- ``layerwise_kd``: distance between a learned, identity-initialised linear map of student block
  m(i) and teacher block i (MSE, or L1 + cosine).

The lattice functions take joiner outputs (B, T, U+1, V) and return one value per utterance
(B,). ``*_nodes`` variants take any node layout (B, T, N, V) -- the pruned loss's band has N = S
nodes per frame, the whole lattice N = U+1 -- with an explicit index of y and a validity mask.

Normalisation: the output KD of an utterance is the mean KL over each frame's valid nodes, summed
over its valid frames (``per_frame``). The same beta therefore weighs the same thing whether the
student's transducer loss is pruned (KD on 5 band nodes per frame) or not (KD on U+1 nodes per
frame); summed over nodes, beta was (U+1)/S times stronger on the whole lattice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG_INF = float("-inf")


# ----- node masks ----------------------------------------------------------------------------------
def lattice_mask(logit_lengths: Tensor, target_lengths: Tensor, t_max: int, u1: int) -> Tensor:
    """(B, T, U+1) True at the valid nodes of each utterance."""
    t = torch.arange(t_max, device=logit_lengths.device)
    u = torch.arange(u1, device=logit_lengths.device)
    return (t[None, :, None] < logit_lengths[:, None, None]) & \
        (u[None, None, :] <= target_lengths[:, None, None])


def next_token(targets: Tensor, u1: int) -> Tensor:
    """(B, U) -> (B, U+1): the reference token after node u (0 where there is none)."""
    pad = targets.new_zeros(targets.shape[0], 1)
    return torch.cat([targets.long(), pad.long()], 1)[:, :u1]


# ----- the 3-way posteriors ---------------------------------------------------------------------
def three_way(logits: Tensor, y: Tensor, has_y: Tensor, blank: int = 0,
              temperature: float = 1.0) -> Tensor:
    """Log P(y), log P(blank), log P(rest) at each node, (..., 3), from joiner ``logits`` (..., V)
    divided by ``temperature``.

    ``y`` (...) is the next reference token, ``has_y`` (...) False where there is none (u = U):
    there P(y) is -inf and "rest" holds every non-blank token. Rest is a masked log-sum-exp
    (exact, no 1 - p cancellation)."""
    logits = logits.float()
    if temperature != 1.0:  # no (..., V) copy at the paper's tau = 1
        logits = logits / temperature
    norm = logits.logsumexp(-1)
    l_y = logits.gather(-1, y[..., None].clamp(min=0)).squeeze(-1)
    l_b = logits[..., blank]
    # a real y equal to blank cannot happen (blank is never a target); guard anyway
    y_real = has_y & (y != blank)
    # one V-sized copy (what logsumexp keeps for its backward), no (..., V) mask
    drop = torch.stack([torch.where(y_real, y, torch.full_like(y, blank)),
                        torch.full_like(y, blank)], -1)
    l_rest = logits.scatter(-1, drop, NEG_INF).logsumexp(-1)
    log_y = torch.where(y_real, l_y - norm, torch.full_like(norm, NEG_INF))
    return torch.stack([log_y, l_b - norm, l_rest - norm], -1)


def _kl(t_log: Tensor, s_log: Tensor) -> Tensor:
    """sum_k p_t (log p_t - log p_s) over the last axis; terms with p_t = 0 are 0."""
    p_t = t_log.exp()
    diff = torch.where(p_t > 0, t_log - s_log.clamp(min=-1e4), torch.zeros_like(t_log))
    return (p_t * diff).sum(-1)


def per_frame(node_values: Tensor, valid: Tensor) -> Tensor:
    """(B, T, N) values at each frame's N nodes -> (B,): the mean over each frame's valid nodes,
    summed over frames (a frame with no valid node adds 0)."""
    v = valid.to(node_values.dtype)
    per = torch.where(valid, node_values, torch.zeros_like(node_values)).sum(-1)
    return (per / v.sum(-1).clamp(min=1)).sum(1)


def yblank_kd_nodes(student_logits: Tensor, teacher3: Tensor, y: Tensor, has_y: Tensor,
                    valid: Tensor, blank: int = 0, temperature: float = 1.0) -> Tensor:
    """3-way KD on nodes (B, T, N): student logits (B, T, N, V), the teacher already reduced to
    (B, T, N, 3) (``three_way`` of its logits / tau, under ``no_grad``), y / has_y / valid
    (B, T, N). Returns (B,), normalised per frame (``per_frame``), scaled by tau^2."""
    s3 = three_way(student_logits, y, has_y, blank, temperature)
    return per_frame(_kl(teacher3.float(), s3), valid) * temperature ** 2


def yblank_kd(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
              logit_lengths: Tensor, target_lengths: Tensor, blank: int = 0,
              temperature: float = 1.0) -> Tensor:
    """3-way KD over whole lattices (B, T, U+1, V); (B,)."""
    b, t_max, u1, _ = student_logits.shape
    y = next_token(targets, u1)[:, None, :].expand(b, t_max, u1)
    u = torch.arange(u1, device=targets.device)
    has_y = (u[None, :] < target_lengths[:, None])[:, None, :].expand(b, t_max, u1)
    valid = lattice_mask(logit_lengths, target_lengths, t_max, u1)
    with torch.no_grad():
        teacher3 = three_way(teacher_logits, y, has_y, blank, temperature)
    return yblank_kd_nodes(student_logits, teacher3, y, has_y, valid, blank, temperature)


def full_kd_nodes(student_logits: Tensor, teacher_logp: Tensor, valid: Tensor,
                  temperature: float = 1.0) -> Tensor:
    """Full-vocabulary KD on nodes (B, T, N); ``teacher_logp`` is log_softmax(teacher / tau).
    Normalised per frame (``per_frame``), x tau^2."""
    s = (student_logits.float() / temperature).log_softmax(-1)
    return per_frame(_kl(teacher_logp.float(), s), valid) * temperature ** 2


def full_kd(student_logits: Tensor, teacher_logits: Tensor, logit_lengths: Tensor,
            target_lengths: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) over the vocabulary at every valid node, normalised per frame,
    x tau^2; (B,)."""
    b, t_max, u1, _ = student_logits.shape
    valid = lattice_mask(logit_lengths, target_lengths, t_max, u1)
    with torch.no_grad():
        t = (teacher_logits.float() / temperature).log_softmax(-1)
    return full_kd_nodes(student_logits, t, valid, temperature)


# ----- layerwise ------------------------------------------------------------------------------------
class LayerMaps(nn.Module):
    """One learned linear map per (student block m(i), teacher block i) pair, initialised to the
    identity (on the overlapping dimensions when the widths differ)."""

    def __init__(self, pairs: list[tuple[int, int]], student_dims: list[int],
                 teacher_dims: list[int]) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self.maps = nn.ModuleList()
        for s_i, t_i in self.pairs:
            lin = nn.Linear(student_dims[s_i], teacher_dims[t_i])
            with torch.no_grad():
                lin.weight.zero_()
                n = min(lin.weight.shape)
                lin.weight[:n, :n] = torch.eye(n)
                lin.bias.zero_()
            self.maps.append(lin)

    def forward(self, student_blocks: list[Tensor], teacher_blocks: list[Tensor],
                lengths: list[Tensor], kind: str = "mse") -> Tensor:
        """Mean over pairs of the per-utterance distance summed over valid frames; (B,)."""
        total = None
        for (s_i, t_i), lin in zip(self.pairs, self.maps):
            s, t = lin(student_blocks[s_i]), teacher_blocks[t_i].detach()
            n = min(s.shape[1], t.shape[1])
            s, t = s[:, :n], t[:, :n]
            mask = (torch.arange(n, device=s.device)[None] < lengths[t_i][:, None]).float()
            if kind == "mse":
                d = (s - t).pow(2).mean(-1)
            elif kind == "l1-cosine":
                d = (s - t).abs().mean(-1) - F.cosine_similarity(s, t, dim=-1)
            else:
                raise ValueError(f"unknown layerwise distance {kind!r}; allowed: mse, l1-cosine")
            term = (d * mask).sum(1)
            total = term if total is None else total + term
        return total / max(len(self.pairs), 1)


def layer_pairs(student_blocks: int, teacher_blocks: int, mapping: list[int] | None = None,
                student_reduce: int | None = None,
                teacher_reduce: int | None = None) -> list[tuple[int, int]]:
    """(student block, teacher block) pairs: ``mapping[i]`` is the student block matched to
    teacher block i; by default each student block matches the teacher block at the same
    relative depth (the last to the last). With a time reduction after block ``*_reduce`` in
    both, where those pairs would mix the two frame rates, the blocks up to it and those after it
    are matched apart (a shared 6-layer student against a 5-block teacher pairs its first two
    blocks with the teacher's first two and its last four with the teacher's last three)."""
    if mapping is not None:
        if len(mapping) != teacher_blocks:
            raise ValueError(f"layer mapping has {len(mapping)} entries; the teacher has "
                             f"{teacher_blocks} blocks")
        bad = [m for m in mapping if not -1 <= m < student_blocks]
        if bad:
            raise ValueError(f"layer mapping names student blocks {bad}; the student has "
                             f"{student_blocks} (use -1 to leave a teacher block unmatched)")
        return [(m, i) for i, m in enumerate(mapping) if m >= 0]

    def by_depth(s0: int, ns: int, t0: int, nt: int) -> list[tuple[int, int]]:
        return [(s0 + s, t0 + max(0, round((s + 1) * nt / ns) - 1)) for s in range(ns)]

    whole = by_depth(0, student_blocks, 0, teacher_blocks)
    split = (student_reduce is not None and teacher_reduce is not None
             and student_reduce + 1 < student_blocks and teacher_reduce + 1 < teacher_blocks)
    if not split or all((s > student_reduce) == (t > teacher_reduce) for s, t in whole):
        return whole  # the pairs by depth over the whole encoder already keep to one rate
    ns, nt = student_reduce + 1, teacher_reduce + 1
    return (by_depth(0, ns, 0, nt)
            + by_depth(ns, student_blocks - ns, nt, teacher_blocks - nt))


# ----- the distiller: student + frozen teacher -> one loss ---------------------------------------
def block_lengths(model, x_lens: Tensor, enc_lens: Tensor) -> list[Tensor]:
    """Valid frames of each encoder block's output: the 4x rate up to the time reduction, the
    encoder's output rate after it."""
    from engine.models.conformer import Conv2dSubsampling

    four = Conv2dSubsampling.out_lengths(x_lens).clamp(min=1)
    r = model.cfg.encoder.reduce_after
    return [enc_lens if r is not None and i > r else four
            for i in range(model.cfg.encoder.n_layers)]


class HoldsTeacher:
    """For a module that keeps a frozen teacher outside its module tree (``self._teacher``, so
    it is neither trained nor saved): ``.to(device)`` and friends move the teacher too."""

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if getattr(self, "_teacher", None) is not None:
            self._teacher._apply(fn)
        return self


def kd_weight_at(kd, step: int, total: int) -> float:
    """beta after ``step`` of ``total`` updates under ``kd.schedule``: ``kd.weight`` throughout
    (constant), or moving from it to ``kd.final_weight`` linearly or along a half
    cosine, then holding there."""
    if kd.schedule == "constant" or total <= 0:
        return kd.weight
    end = kd.final_weight
    frac = min(max(step / total, 0.0), 1.0)
    if kd.schedule == "linear":
        return kd.weight + (end - kd.weight) * frac
    return end + (kd.weight - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


class Distiller(HoldsTeacher, nn.Module):
    """Trains ``student`` (a Transducer) against a frozen ``teacher``: the student's own
    transducer loss (and CTC) + beta x output KD on the student's lattice nodes (the pruned
    loss's band, or the whole lattice) + gamma x layerwise KD. The teacher is held outside the
    module tree: it is not trained, not put in train mode and not saved in checkpoints."""

    def __init__(self, student, teacher, kd) -> None:
        super().__init__()
        self.student, self.kd = student, kd
        self.beta = kd.weight  # the output KD's weight now; the trainer moves it (set_progress)
        teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_teacher", teacher)
        if student.cfg.blank != teacher.cfg.blank or student.cfg.vocab_size != teacher.cfg.vocab_size:
            raise ValueError(f"student and teacher must share the tokenizer: vocabulary "
                             f"{student.cfg.vocab_size} vs {teacher.cfg.vocab_size}")
        self.maps = None
        if kd.layerwise_weight > 0:
            s_cfg, t_cfg = student.encoder.config(), teacher.encoder.config()
            s_dims, t_dims = [s_cfg.d_model] * s_cfg.n_layers, [t_cfg.d_model] * t_cfg.n_layers
            self.maps = LayerMaps(layer_pairs(len(s_dims), len(t_dims), kd.layer_map,
                                              s_cfg.reduce_after, t_cfg.reduce_after),
                                  s_dims, t_dims)

    @property
    def teacher(self):
        return self._teacher

    def set_progress(self, step: int, total: int) -> None:
        """Called by the trainer before each update (and so after a resume too)."""
        self.beta = kd_weight_at(self.kd, step, total)

    def metrics(self) -> dict:
        """beta, logged beside the losses when a schedule moves it."""
        if self.kd.loss == "none" or self.kd.schedule == "constant":
            return {}
        return {"kd_weight": round(self.beta, 6)}

    def config(self):
        return self.student.config()

    def forward(self, x: Tensor, x_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                warmup: float = 1.0, keep_enc: bool = False) -> dict[str, Tensor]:
        """``keep_enc``: also return the student's encoder output (``enc``, ``enc_lens``), for a
        second-pass decoder trained on it (engine.compress.twopass)."""
        kd = self.kd
        out = self.student(x, x_lens, tokens, token_lens, warmup, keep=True)
        enc, enc_lens, blocks = out.pop("enc"), out.pop("enc_lens"), out.pop("blocks")
        logits, node_u = out.pop("node_logits"), out.pop("node_u")
        need_teacher = kd.loss != "none" or self.maps is not None
        if need_teacher:
            with torch.no_grad():
                t_enc, t_lens, t_blocks = self.teacher.encoder(x, x_lens, return_blocks=True)
            if t_enc.shape[1] != enc.shape[1]:
                raise ValueError(f"teacher and student run at different frame rates "
                                 f"({t_enc.shape[1]} vs {enc.shape[1]} frames): give both the "
                                 f"same time_reduction")
        if kd.loss != "none":
            out["kd"] = self._output_kd(logits, node_u, enc_lens, t_enc, tokens,
                                        token_lens).sum()
            out["loss"] = out["loss"] + self.beta * out["kd"]
        if self.maps is not None:
            t_lens_b = block_lengths(self.teacher, x_lens, t_lens)
            for s_i, t_i in self.maps.pairs:
                if blocks[s_i].shape[1] != t_blocks[t_i].shape[1]:
                    raise ValueError(f"layer map pairs student block {s_i} with teacher block "
                                     f"{t_i}, which run at different frame rates")
            out["layer"] = self.maps(blocks, t_blocks, t_lens_b, kd.layerwise_distance).sum()
            out["loss"] = out["loss"] + kd.layerwise_weight * out["layer"]
        if keep_enc:
            out["enc"], out["enc_lens"] = enc, enc_lens
        return out

    def _output_kd(self, logits: Tensor, node_u: Tensor | None, enc_lens: Tensor, t_enc: Tensor,
                   tokens: Tensor, token_lens: Tensor) -> Tensor:
        t = self.teacher
        b, t_max = logits.shape[:2]
        u1 = tokens.shape[1] + 1
        if node_u is None:  # the whole lattice
            node_u = torch.arange(u1, device=tokens.device)[None, None].expand(b, t_max, u1)
        y = next_token(tokens, u1).gather(1, node_u.reshape(b, -1)).reshape(node_u.shape)
        has_y = node_u < token_lens[:, None, None]
        valid = (torch.arange(t_max, device=logits.device)[None, :, None] < enc_lens[:, None, None]) \
            & (node_u <= token_lens[:, None, None])
        teacher = self._teacher_nodes(t_enc, tokens, node_u, y, has_y)
        if self.kd.loss == "yblank":
            return yblank_kd_nodes(logits, teacher, y, has_y, valid, t.cfg.blank,
                                   self.kd.temperature)
        return full_kd_nodes(logits, teacher, valid, self.kd.temperature)

    @torch.no_grad()
    def _teacher_nodes(self, t_enc: Tensor, tokens: Tensor, node_u: Tensor, y: Tensor,
                       has_y: Tensor, chunk_elems: int = 1 << 22) -> Tensor:
        """The teacher at the student's nodes (B, T, N), reduced as the KD needs it -- to the 3
        posteriors of logits / tau (yblank) or to log_softmax(logits / tau) (full) -- a few
        frames at a time, so its joiner output (B, T, N, V) is never held whole: 3-way KD costs O(T x N x 3) for the
        teacher beyond one chunk of about ``chunk_elems`` values."""
        t = self.teacher
        b, t_max, n = node_u.shape
        blank = tokens.new_full((b, 1), t.cfg.blank)
        pred, _ = t.predict(torch.cat([blank, tokens], 1))
        pred_proj, enc_proj = t.project_pred(pred), t.project_enc(t_enc)
        j = pred_proj.shape[-1]
        step = max(1, chunk_elems // max(1, b * n * t.cfg.vocab_size))
        parts = []
        for a in range(0, t_max, step):
            z = slice(a, a + step)
            nodes = node_u[:, z]
            c = nodes.shape[1]
            band = pred_proj.gather(1, nodes.reshape(b, -1, 1).expand(-1, -1, j)).reshape(b, c, n, j)
            lg = t.join(enc_proj[:, z, None], band)
            if self.kd.loss == "yblank":
                parts.append(three_way(lg, y[:, z], has_y[:, z], t.cfg.blank,
                                       self.kd.temperature))
            else:
                parts.append((lg.float() / self.kd.temperature).log_softmax(-1))
            del lg
        return torch.cat(parts, 1)
