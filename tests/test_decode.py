import pytest
import torch

from engine.decode import (greedy_search, modified_beam_search, modified_beam_search_nbest,
                           streaming_greedy_search)
from engine.models.build import build, preset


def _trained_like(streaming=False, predictor="stateless"):
    """A random tiny model whose joiner is biased so that it emits tokens (not only blanks)."""
    torch.manual_seed(0)
    model = build(preset("tiny", vocab_size=16, streaming=streaming, predictor=predictor)).eval()
    with torch.no_grad():
        model.joiner.out.bias[0] -= 1.5
    return model


def test_batched_greedy_equals_one_at_a_time():
    for predictor in ("stateless", "lstm"):
        model = _trained_like(predictor=predictor)
        x, lens = torch.randn(3, 200, 80), torch.tensor([200, 170, 90])
        enc, enc_lens = model.encode(x, lens)
        batched = greedy_search(model, enc, enc_lens)
        assert any(batched)
        for i in range(3):  # same encoder rows, searched alone (encoder padding is tested apart)
            n = int(enc_lens[i])
            assert greedy_search(model, enc[i : i + 1, :n], enc_lens[i : i + 1]) == [batched[i]]


def _log_prob(model, enc, tokens: list[int], max_symbols: int) -> float:
    """log P(tokens | enc) summed over every alignment with at most ``max_symbols`` tokens a
    frame, each frame ended by blank: the forward algorithm over the joiner's lattice."""
    lp = model.lattice_logits(enc[None], torch.tensor([tokens or [0]]))[0].log_softmax(-1)
    big_t, u_max, blank = enc.shape[0], len(tokens), model.cfg.blank
    neg = torch.tensor(float("-inf"))
    start = {0: torch.tensor(0.0)}  # u -> log alpha at the start of the frame
    for t in range(big_t):
        cur, ended = dict(start), {}
        for _ in range(max_symbols + 1):
            for u, a in cur.items():
                ended[u] = torch.logaddexp(ended.get(u, neg), a + lp[t, u, blank])
            cur = {u + 1: a + lp[t, u, tokens[u]] for u, a in cur.items() if u < u_max}
        start = ended
    return float(start.get(u_max, neg).detach())


def test_beam_scores_are_log_probabilities_of_kept_alignments():
    model = _trained_like()
    x, lens = torch.randn(1, 48, 80), torch.tensor([48])
    enc, enc_lens = model.encode(x, lens)
    for max_symbols in (1, 3):
        nbest = modified_beam_search_nbest(model, enc, enc_lens, beam=8,
                                           max_symbols=max_symbols)[0]
        assert [s for _, s in nbest] == sorted((s for _, s in nbest), reverse=True)
        for toks, score in nbest:  # a merged path sum: never above the hypothesis's probability
            assert score <= _log_prob(model, enc[0], toks, max_symbols) + 1e-4
        toks, score = nbest[0]
        assert score == pytest.approx(_log_prob(model, enc[0], toks, max_symbols), abs=1e-3)


class _Spelling:
    """A transducer whose next symbol depends on the last token only: after blank (the start)
    "a", after "a" "b", after "b" blank: it says "a b" and must do so within one frame."""

    class cfg:
        blank = 0

    table = torch.tensor([[0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [10.0, 0.0, 0.0]])

    def project_enc(self, enc):
        return enc

    def predict(self, y, state):
        return torch.nn.functional.one_hot(y, 3).float(), state

    def project_pred(self, pred):
        return pred

    def join(self, enc_p, pred_p):
        return pred_p @ self.table


def test_beam_search_emits_several_tokens_a_frame_when_the_model_does():
    """One token a frame at most dropped word pieces at the lab's 80 ms frames; the search now
    allows what greedy search allows."""
    model, enc, lens = _Spelling(), torch.zeros(1, 1, 4), torch.tensor([1])
    assert greedy_search(model, enc, lens) == [[1, 2]]
    assert modified_beam_search(model, enc, lens, beam=4) == [[1, 2]]
    nbest = modified_beam_search_nbest(model, enc, lens, beam=4)[0]
    assert nbest[0][1] == pytest.approx(float(3 * torch.tensor([10.0, 0, 0]).log_softmax(0)[0]))
    assert len(modified_beam_search(model, enc, lens, beam=4, max_symbols=1)[0]) <= 1


def test_streaming_search_equals_greedy_on_the_masked_pass():
    model = _trained_like(streaming=True)
    x, lens = torch.randn(2, 300, 80), torch.tensor([300, 211])
    enc, enc_lens = model.encode(x, lens)
    offline = [greedy_search(model, enc[i : i + 1, : int(enc_lens[i])], enc_lens[i : i + 1])[0]
               for i in range(2)]
    assert streaming_greedy_search(model, x, lens) == offline


def test_a_changed_search_retires_exactly_the_stages_that_search(monkeypatch):
    """Two-pass stages (their lambda is chosen with the beam) and beam evaluations change
    identity with the search, and so does what depends on them; greedy models and evaluations
    keep theirs, so `--reuse` hands back nothing the current search would not have found."""
    from pathlib import Path

    from engine.config import load_experiment
    from engine.runner import graph

    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "seeds.toml")
    before = graph.stage_hashes(exp)
    monkeypatch.setattr(graph, "SEARCH_VERSION", graph.SEARCH_VERSION + 1)
    after = graph.stage_hashes(exp)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"teacher-las", "s3-las", "s3-deep", "export-teacher-las", "eval-teacher-las",
                       "export-s3-las", "eval-s3-las", "export-s3-deep", "eval-s3-deep"}
