"""Two-pass model compression (Dawalatabad et al., ASRU 2021, arXiv 2201.02741), in one place.

A two-pass model streams an RNN-T first pass and rescores its n-best with a LAS decoder that
attends to the same, shared encoder (``engine.models.las``). The paper compresses it in three
stages; the first is RNN-T distillation (``engine.compress.distill``), the other two are here:

- ``LASTrainer``: trains only the LAS of a model on its **frozen** encoder, with cross-entropy
  (``las_train``: the teacher's own rescorer), plus, given a teacher two-pass model, token-level
  KL(teacher LAS || student LAS) under teacher forcing at a temperature (``las_distill``: stage 2).
- ``DeepFinetune``: stage 3, encoder, predictor, joiner and LAS trained together: the transducer
  losses (and, with a teacher, its RNN-T KD) + ``las_weight`` x LAS cross-entropy (+ LAS KD).
- ``tune_lambda``: the interpolation weight of ``lambda * las + (1 - lambda) * rnnt`` chosen on
  dev from one first pass and one batched rescoring (stored in the model file's meta).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.compress.distill import HoldsTeacher


def las_kd(student_logits: Tensor, teacher_logits: Tensor, tokens: Tensor, token_lens: Tensor,
           temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) of the next-token distributions at every valid position (U+1 per
    utterance, the end of sentence included), x tau^2; summed over the batch."""
    u1 = student_logits.shape[1]
    valid = torch.arange(u1, device=tokens.device)[None] <= token_lens[:, None]
    with torch.no_grad():
        t = (teacher_logits.float() / temperature).log_softmax(-1)
    s = (student_logits.float() / temperature).log_softmax(-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return (kl * valid).sum() * temperature ** 2


def teacher_las_kd(teacher, x: Tensor, x_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                   student_logits: Tensor, temperature: float) -> Tensor:
    """``las_kd`` against a frozen two-pass teacher run on the same batch."""
    with torch.no_grad():
        t_enc, t_lens = teacher.encode(x, x_lens)
        t_logits = teacher.las(t_enc, t_lens, tokens)
    return las_kd(student_logits, t_logits, tokens, token_lens, temperature)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class LASTrainer(HoldsTeacher, nn.Module):
    """The LAS of ``student`` trained on its frozen encoder (cross-entropy, and KL to a
    teacher's LAS when given). Only the LAS's parameters train; the rest of the model is saved
    unchanged."""

    def __init__(self, student, teacher=None, temperature: float = 1.0, kd_weight: float = 1.0,
                 ce_weight: float = 1.0) -> None:
        super().__init__()
        if student.las is None:
            raise ValueError("the model has no LAS rescorer to train")
        self.student = student
        for name, p in student.named_parameters():
            p.requires_grad_(name.startswith("las."))
        if teacher is not None:
            if teacher.las is None:
                raise ValueError("the teacher has no LAS rescorer (make one with las_train)")
            object.__setattr__(self, "_teacher", _frozen(teacher))
        else:
            object.__setattr__(self, "_teacher", None)
        self.temperature, self.kd_weight, self.ce_weight = temperature, kd_weight, ce_weight

    @property
    def teacher(self):
        return self._teacher

    def config(self):
        return self.student.config()

    def train(self, mode: bool = True):
        super().train(mode)
        self.student.encoder.eval()  # frozen: no dropout either
        return self

    def forward(self, x: Tensor, x_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                warmup: float = 1.0) -> dict[str, Tensor]:
        with torch.no_grad():
            enc, enc_lens = self.student.encode(x, x_lens)
        ce, logits = self.student.las.loss(enc, enc_lens, tokens, token_lens)
        out = {"loss": self.ce_weight * ce, "rnnt": ce.new_zeros(()), "las": ce.detach()}
        if self.teacher is not None:
            kd = teacher_las_kd(self.teacher, x, x_lens, tokens, token_lens, logits,
                                self.temperature)
            out["las_kd"] = kd.detach()
            out["loss"] = out["loss"] + self.kd_weight * kd
        return out


class DeepFinetune(HoldsTeacher, nn.Module):
    """Every part of a two-pass model trained together: ``inner`` (the model, or a Distiller
    for RNN-T KD) gives the transducer losses and the shared encoder's output; the LAS adds its
    cross-entropy on it, and KL to the teacher's LAS when ``las_kd_weight`` > 0."""

    def __init__(self, inner: nn.Module, teacher=None, las_weight: float = 1.0,
                 las_kd_weight: float = 0.0, temperature: float = 1.0) -> None:
        super().__init__()
        self.inner = inner
        if self.student.las is None:
            raise ValueError("deep finetuning needs a two-pass model (one with a LAS rescorer)")
        object.__setattr__(self, "_teacher", _frozen(teacher) if teacher is not None else None)
        if las_kd_weight > 0 and (teacher is None or teacher.las is None):
            raise ValueError("LAS KD needs a teacher with a LAS rescorer")
        self.las_weight, self.las_kd_weight, self.temperature = las_weight, las_kd_weight, temperature

    @property
    def student(self):
        return getattr(self.inner, "student", self.inner)

    def config(self):
        return self.student.config()

    def forward(self, x: Tensor, x_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                warmup: float = 1.0) -> dict[str, Tensor]:
        out = self.inner(x, x_lens, tokens, token_lens, warmup, keep_enc=True) \
            if self.inner is not self.student else self._plain(x, x_lens, tokens, token_lens, warmup)
        enc, enc_lens = out.pop("enc"), out.pop("enc_lens")
        ce, logits = self.student.las.loss(enc, enc_lens, tokens, token_lens)
        out["las"] = ce.detach()
        out["loss"] = out["loss"] + self.las_weight * ce
        if self.las_kd_weight > 0:
            kd = teacher_las_kd(self._teacher, x, x_lens, tokens, token_lens, logits,
                                self.temperature)
            out["las_kd"] = kd.detach()
            out["loss"] = out["loss"] + self.las_kd_weight * kd
        return out

    def _plain(self, x, x_lens, tokens, token_lens, warmup):
        out = self.student(x, x_lens, tokens, token_lens, warmup, keep=True)
        for k in ("blocks", "node_logits", "node_u"):
            out.pop(k, None)
        return out


@torch.no_grad()
def tune_lambda(model, tok, cuts, nbest: int = 4, lambdas: list[float] | None = None,
                max_seconds: float = 60.0) -> dict:
    """The lambda of ``lambda * las + (1 - lambda) * rnnt`` with the lowest WER on ``cuts`` (a
    dev subset): one first pass and one rescoring, then every lambda re-ranks the same n-best.
    Returns {"lambda", "nbest", "wer": {lambda: WER}, "utterances"}."""
    from engine.data.batching import batches_of, cut_text
    from engine.decode import two_pass
    from engine.evaluate import corpus_wer, score_utterance

    lambdas = lambdas if lambdas is not None else [round(0.1 * i, 1) for i in range(11)]
    model.eval()
    lists, refs = [], []
    for group in batches_of(cuts, max_seconds):
        feats = [torch.as_tensor(c.load_features()) for c in group]
        lens = torch.tensor([f.shape[0] for f in feats])
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        enc, enc_lens = model.encode(x, lens)
        passes, _ = two_pass(model, enc, enc_lens, nbest, 0.0)
        lists += [p["nbest"] for p in passes]
        refs += [(c.id, cut_text(c)) for c in group]
    wer = {}
    for lam in lambdas:
        results = []
        for (cid, ref), cands in zip(refs, lists):
            best = max(cands, key=lambda h: lam * h["las"] + (1 - lam) * h["rnnt"])
            results.append(score_utterance(cid, ref, tok.decode(best["tokens"])))
        wer[lam] = round(corpus_wer(results), 3)
    best = min(lambdas, key=lambda lam: (wer[lam], lam))
    return {"lambda": best, "nbest": nbest, "wer": {str(k): v for k, v in wer.items()},
            "utterances": len(refs)}
