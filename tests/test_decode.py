from dataclasses import replace

import torch

from engine.decode import greedy_search, modified_beam_search, streaming_greedy_search
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


def test_beam_one_equals_one_symbol_greedy_and_beam_scores_no_worse():
    model = _trained_like()
    x, lens = torch.randn(2, 160, 80), torch.tensor([160, 120])
    enc, enc_lens = model.encode(x, lens)
    assert modified_beam_search(model, enc, enc_lens, beam=1) == greedy_search(
        model, enc, enc_lens, max_symbols=1)
    assert len(modified_beam_search(model, enc, enc_lens, beam=4)) == 2


def test_streaming_search_equals_greedy_on_the_masked_pass():
    model = _trained_like(streaming=True)
    x, lens = torch.randn(2, 300, 80), torch.tensor([300, 211])
    enc, enc_lens = model.encode(x, lens)
    offline = [greedy_search(model, enc[i : i + 1, : int(enc_lens[i])], enc_lens[i : i + 1])[0]
               for i in range(2)]
    assert streaming_greedy_search(model, x, lens) == offline
