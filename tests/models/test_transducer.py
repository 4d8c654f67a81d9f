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
        assert set(out) == {"loss", "rnnt", "ctc"} and torch.isfinite(out["loss"])
        out["loss"].backward()
        assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_stateless_predictor_zeroes_minus_one_ids():
    model = build(preset("tiny", vocab_size=32)).eval()
    a, _ = model.predict(torch.tensor([[5]]), torch.tensor([[-1]]))
    emb = model.predictor.embed.weight
    with torch.no_grad():
        emb[0].fill_(7.0)  # if -1 were clamped to 0 and used, this would show
    b, _ = model.predict(torch.tensor([[5]]), torch.tensor([[-1]]))
    torch.testing.assert_close(a, b)
