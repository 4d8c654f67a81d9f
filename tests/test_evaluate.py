import pytest

from engine.evaluate import (bootstrap_ci, corpus_wer, paired_bootstrap, score_utterance,
                             summarize)


def test_per_utterance_counts():
    r = score_utterance("a", "THE CAT SAT ON THE MAT", "THE BAT SAT THE MAT TODAY")
    assert (r.substitutions, r.deletions, r.insertions, r.ref_words) == (1, 1, 1, 6)
    assert score_utterance("b", "ONE TWO", "").deletions == 2
    with pytest.raises(ValueError, match="empty reference"):
        score_utterance("c", " ", "X")


def test_bootstrap_interval_brackets_the_corpus_wer():
    rs = [score_utterance(str(i), "A B C D", "A B C D" if i % 3 else "A X C")
          for i in range(60)]
    wer = corpus_wer(rs)
    lo, hi = bootstrap_ci(rs)
    assert lo < wer < hi and hi - lo < 20
    s = summarize(rs)
    assert s["wer"] == pytest.approx(wer, abs=1e-3) and s["utterances"] == 60


def test_paired_bootstrap_sees_a_real_gap_and_no_gap():
    ref = "A B C D E"
    a = [score_utterance(str(i), ref, ref) for i in range(50)]
    b = [score_utterance(str(i), ref, "A B X D E" if i % 2 else ref) for i in range(50)]
    d = paired_bootstrap(a, b)
    assert d["delta"] == pytest.approx(10.0) and d["ci"][0] > 0 and d["p_b_better"] == 0
    same = paired_bootstrap(a, a)
    assert same["delta"] == 0 and same["ci"] == [0.0, 0.0]
