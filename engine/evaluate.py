"""Word error rate with per-utterance detail, bootstrap confidence intervals, paired bootstrap.

Every WER the lab reports carries a 95% interval from resampling utterances (Bisani & Ney 2004):
corpus WER is recomputed as sum(errors) / sum(reference words) on each resample. Two models on the
same utterances are compared with the paired bootstrap: the interval of the WER difference, and
the share of resamples in which the second model is better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jiwer
import numpy as np


@dataclass(frozen=True)
class UtteranceResult:
    cut_id: str
    reference: str
    hypothesis: str
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def to_dict(self) -> dict:
        return {**asdict(self), "errors": self.errors}


def score_utterance(cut_id: str, reference: str, hypothesis: str) -> UtteranceResult:
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref:
        raise ValueError(f"utterance {cut_id}: empty reference transcript")
    if not hyp:
        n = len(ref.split())
        return UtteranceResult(cut_id, ref, hyp, n, 0, n, 0)
    o = jiwer.process_words(ref, hyp)
    return UtteranceResult(cut_id, ref, hyp, len(ref.split()), o.substitutions, o.deletions,
                           o.insertions)


def corpus_wer(results: list[UtteranceResult]) -> float:
    """Percent."""
    words = sum(r.ref_words for r in results)
    return 100.0 * sum(r.errors for r in results) / max(words, 1)


def bootstrap_ci(results: list[UtteranceResult], n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of corpus WER (percent) over ``n`` resamples of utterances."""
    errors = np.array([r.errors for r in results], dtype=np.float64)
    words = np.array([r.ref_words for r in results], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(results), size=(n, len(results)))
    wers = 100.0 * errors[idx].sum(1) / np.maximum(words[idx].sum(1), 1)
    lo, hi = np.percentile(wers, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float(lo), float(hi)


def paired_bootstrap(a: list[UtteranceResult], b: list[UtteranceResult], n: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """WER(b) - WER(a) with its interval, on the utterances both were scored on."""
    bm = {r.cut_id: r for r in b}
    common = [r.cut_id for r in a if r.cut_id in bm]
    if not common:
        raise ValueError("the two result sets share no utterances")
    am = {r.cut_id: r for r in a}
    ea = np.array([am[c].errors for c in common], dtype=np.float64)
    eb = np.array([bm[c].errors for c in common], dtype=np.float64)
    w = np.array([am[c].ref_words for c in common], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(common), size=(n, len(common)))
    diff = 100.0 * (eb[idx].sum(1) - ea[idx].sum(1)) / np.maximum(w[idx].sum(1), 1)
    lo, hi = np.percentile(diff, [50 * (1 - level), 100 - 50 * (1 - level)])
    return {"delta": float(100.0 * (eb.sum() - ea.sum()) / max(w.sum(), 1)),
            "ci": [float(lo), float(hi)], "p_b_better": float((diff < 0).mean()),
            "utterances": len(common)}


def summarize(results: list[UtteranceResult]) -> dict:
    lo, hi = bootstrap_ci(results)
    return {"wer": round(corpus_wer(results), 3), "wer_ci": [round(lo, 3), round(hi, 3)],
            "utterances": len(results), "ref_words": sum(r.ref_words for r in results),
            "substitutions": sum(r.substitutions for r in results),
            "deletions": sum(r.deletions for r in results),
            "insertions": sum(r.insertions for r in results)}
