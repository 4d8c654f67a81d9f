import torch

from engine.models.build import build, preset


def test_encode_predict_join_and_losses():
    torch.manual_seed(0)
    for kind in ("stateless", "lstm"):
        model = build(preset("tiny", vocab_size=32, predictor=kind))
        x, lens = torch.randn(2, 200, 80), torch.tensor([200, 150])
        tokens, tlens = torch.randint(3, 32, (2, 6)), torch.tensor([6, 4])
        enc, enc_lens = model.encode(x, lens)
        assert enc.shape[:2] == (2, int(enc_lens.max())) and enc_lens.tolist()[0] > enc_lens.tolist()[1]
        pred, _ = model.predict(tokens)
        logits = model.join(model.project_enc(enc)[:, :, None], model.project_pred(pred)[:, None])
        assert logits.shape == (2, enc.shape[1], 6, 32)
        out = model(x, lens, tokens, tlens)
        # the default loss is the pruned one: its simple joiner's loss is a term of its own
        assert set(out) == {"loss", "rnnt", "ctc", "simple", "zeroed"} and torch.isfinite(out["loss"])
        assert int(out["zeroed"]) == 0
        out["loss"].backward()
        assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_each_loss_gives_its_terms_and_gradients():
    x, lens = torch.randn(2, 200, 80), torch.tensor([200, 150])
    tokens, tlens = torch.randint(3, 32, (2, 6)), torch.tensor([6, 4])
    for loss, terms in (("torchaudio", {"loss", "rnnt", "ctc"}),
                        ("full", {"loss", "rnnt", "ctc", "zeroed"}),  # our losses count zeroed
                        ("pruned", {"loss", "rnnt", "ctc", "simple", "zeroed"})):
        torch.manual_seed(0)
        model = build(preset("tiny", vocab_size=32, loss=loss))
        out = model(x, lens, tokens, tlens)
        assert set(out) == terms, (loss, set(out))
        out["loss"].backward()
        assert model.joiner.out.weight.grad.abs().sum() > 0, loss


def test_time_reduction_halves_the_joiner_frame_rate():
    x, lens = torch.randn(1, 400, 80), torch.tensor([400])
    _, l8 = build(preset("tiny", vocab_size=32)).encode(x, lens)
    _, l4 = build(preset("tiny", vocab_size=32, time_reduction=False)).encode(x, lens)
    assert int(l4) in (2 * int(l8), 2 * int(l8) - 1), (int(l4), int(l8))


def test_stateless_predictor_zeroes_minus_one_ids():
    model = build(preset("tiny", vocab_size=32)).eval()
    a, _ = model.predict(torch.tensor([[5]]), torch.tensor([[-1]]))
    emb = model.predictor.embed.weight
    with torch.no_grad():
        emb[0].fill_(7.0)  # if -1 were clamped to 0 and used, this would show
    b, _ = model.predict(torch.tensor([[5]]), torch.tensor([[-1]]))
    torch.testing.assert_close(a, b)


def test_ctc_head_on_top_reads_the_encoder_output():
    import torch.nn.functional as F

    from engine.models.build import build, preset

    torch.manual_seed(0)
    model = build(preset("tiny", vocab_size=32, ctc_layer="top")).eval()
    x, lens = torch.randn(2, 200, 80), torch.tensor([200, 170])
    tokens, tok_lens = torch.randint(1, 32, (2, 6)), torch.tensor([6, 4])
    out = model(x, lens, tokens, tok_lens)
    enc, enc_lens = model.encode(x, lens)
    want = F.ctc_loss(model.ctc(enc).log_softmax(-1).transpose(0, 1), tokens, enc_lens, tok_lens,
                      blank=0, reduction="sum", zero_infinity=True)
    torch.testing.assert_close(out["ctc"], want)
    low = build(preset("tiny", vocab_size=32)).eval()
    low.load_state_dict(model.state_dict())
    assert not torch.allclose(low(x, lens, tokens, tok_lens)["ctc"], want)  # block 2 differs
