import json
import subprocess
import sys

import torch

from engine.checkpoint import load_model
from engine.compress.accounting import account

ASRLAB = [sys.executable, "-m", "engine.cli"]


def run(*args):
    return subprocess.run(ASRLAB + [str(a) for a in args], capture_output=True, text=True)


def test_tiny_experiment_writes_every_stage(tiny_run):
    out, outputs = tiny_run
    assert set(outputs) == {"model", "export", "eval"}
    assert (out / "model" / "model.pt").exists() and (out / "export" / "tokens.txt").exists()
    res = json.loads((out / "eval" / "results_test-clean.json").read_text())
    assert res["bytes"] == (out / "export" / "model.pt").stat().st_size
    hyps = (out / "eval" / "hyps_test-other.jsonl").read_text().splitlines()
    assert len(hyps) == 20 and {"reference", "hypothesis", "substitutions"} <= set(json.loads(hyps[0]))


def test_evaluate_json_contract(tiny_run, tiny):
    out, _ = tiny_run
    p = run("evaluate", out / "export" / "model.pt", "--data", tiny, "--split", "test-clean",
            "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    for key in ("wer", "wer_ci", "utterances", "params", "nonzero_params", "bytes",
                "macs_per_second", "rtf"):
        assert key in s, key
    assert s["utterances"] == 20 and s["wer_ci"][0] <= s["wer"] <= s["wer_ci"][1]
    assert s["bytes"] == (out / "export" / "model.pt").stat().st_size
    assert s["rtf"] > 0 and s["macs_per_second"] > 0


def test_inspect_json(tiny_run):
    out, _ = tiny_run
    p = run("inspect", out / "model" / "model.pt", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["params"] > 0 and len(d["blocks"]) == 3
    assert {"heads", "head_dim", "ffn1", "ffn2", "conv_channels", "kernel"} <= set(d["blocks"][0])


def test_bad_model_files_fail_clearly(tmp_path, tiny):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    p = run("evaluate", bad, "--data", tiny, "--json")
    assert p.returncode == 2 and "model.pt" in p.stderr and "Traceback" not in p.stderr
    p = run("inspect", tmp_path / "missing.pt")
    assert p.returncode == 2 and "no such model file" in p.stderr


def test_train_rejects_bad_experiments_clearly(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("[[stages]]\nkind = 'distil'\nname = 'a'\n")
    p = run("train", f)
    assert p.returncode == 2 and "unknown stage kind 'distil'" in p.stderr
    assert "Traceback" not in p.stderr
    # a known kind missing a field it needs names the field
    f.write_text("[[stages]]\nkind = 'distill'\nname = 'a'\n")
    p = run("train", f)
    assert p.returncode == 2 and "stages[0].teacher" in p.stderr and "Traceback" not in p.stderr


def test_accounting_is_measured_from_the_model(tiny_run):
    out, _ = tiny_run
    model, _ = load_model(out / "model" / "model.pt")
    utts = [torch.randn(300, 80) for _ in range(2)]
    a = account(model, utts, out / "export" / "model.pt", repeats=1)
    with torch.no_grad():
        model.encoder.blocks[0].ffn1.up.weight.zero_()
    b = account(model, utts, repeats=1)
    assert b["nonzero_params"] == a["nonzero_params"] - model.encoder.blocks[0].ffn1.up.weight.numel()
    assert b["params"] == a["params"]
    # a physically smaller model costs fewer MACs
    model.encoder.blocks[0].ffn1.prune(torch.arange(8))
    c = account(model, utts, repeats=1)
    assert c["macs_per_second"] < a["macs_per_second"]


def test_compare_gives_a_paired_interval(tiny_run, tiny):
    out, _ = tiny_run
    m = out / "export" / "model.pt"
    p = run("compare", m, m, "--data", tiny, "--split", "dev", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["delta"] == 0 and d["delta_ci"] == [0.0, 0.0] and d["utterances"] == 20


def test_streaming_decoding_of_a_full_context_model_is_refused_clearly(tiny_run, tiny):
    out, _ = tiny_run
    p = run("evaluate", out / "export" / "model.pt", "--data", tiny, "--decoding", "streaming")
    assert p.returncode == 2 and "streaming model" in p.stderr and "Traceback" not in p.stderr


def test_export_refuses_to_write_over_its_own_input(tiny_run, tmp_path):
    import shutil

    out, _ = tiny_run
    m = tmp_path / "M"
    (m / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "model" / "model.pt", m / "model.pt")
    shutil.copy(out / "model" / "model.pt", m / "checkpoints" / "step-00000001.pt")
    before = (m / "model.pt").read_bytes()
    for src in (m / "model.pt", m, m / "checkpoints" / "step-00000001.pt"):
        p = run("export", src, "--out", m)
        assert p.returncode != 0 and "holds the model being exported" in p.stderr + p.stdout, \
            (src, p.stderr)
    assert (m / "model.pt").read_bytes() == before  # the training heads are still there
    p = run("export", m / "model.pt", "--out", tmp_path / "deploy")
    assert p.returncode == 0, p.stderr


def test_evaluate_names_what_is_wrong_with_its_input(tiny_run, tiny, tmp_path):
    import pickle

    out, _ = tiny_run
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "text.pt"
    text.write_text("hello\n")

    class Evil:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (print, ("ran code",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"config": Evil()}))
    model = out / "export" / "model.pt"
    for args, says in (
            ([empty], "an empty file"),
            ([text], "not a PyTorch model file (torch.save writes a zip archive"),
            ([evil], "refused: it holds Python objects beyond tensors"),
            ([model, "--split", "nosuch"], "--split nosuch: " + str(tiny) + " has no such split"),
            ([model, "--runtime", "bogus"], "--runtime 'bogus': expected torch")):
        p = run("evaluate", *args, *([] if "--split" in args else []), "--data", tiny)
        assert p.returncode == 2 and says in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr and "weights_only=False" not in p.stderr
        assert "ran code" not in p.stdout + p.stderr
        assert "error: 2" not in p.stderr


def test_evaluate_takes_a_checkpoint_as_export_does(tiny_run, tiny):
    # a training checkpoint has no tokenizer of its own: the run's experiment names it
    out, _ = tiny_run
    ckpt = sorted((out / "model" / "checkpoints").glob("step-*.pt"))[-1]
    p = run("evaluate", ckpt, "--data", tiny, "--max-utterances", "3", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["utterances"] == 3
