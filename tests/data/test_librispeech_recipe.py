"""experiments/librispeech.toml, the GPU recipe at icefall's scale, cannot run here (no GPU, no
LibriSpeech): its tiny twin runs instead, on a LibriSpeech-layout folder built from the tiny
corpus and imported as a user would. The twin is the recipe itself with its budget shrunk (a few
updates, small batches, the CPU, a vocabulary 12 utterances can hold), so the file stays valid
and every stage and setting in it (bf16, SpecAugment, speed perturbation, the pruned loss, probes,
the sherpa-onnx int8 export and its evaluation) runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _twin(recipe: dict, corpus: Path) -> dict:
    recipe["data"].update(corpus=str(corpus), vocab_size=48)
    for st in recipe["stages"]:
        if st.get("train"):
            st["train"].update(max_steps=3, max_duration=20.0, warmup_steps=1,
                               loss_warmup_steps=1, log_every=1, checkpoint_every=3,
                               average_last=1, eval_every=3, eval_utterances=3, device="cpu",
                               eval_splits=["dev", "test-other"])
        if st["kind"] == "evaluate":
            st.update(splits=["test-other"], max_utterances=3, accounting_utterances=1)
            if st.get("runtime", "torch") == "torch":
                st["device"] = "cpu"
    return recipe


def test_the_librispeech_recipe_runs_on_an_imported_librispeech_folder(tiny, tmp_path):
    from engine.config import load_experiment, parse_experiment
    from engine.data.importers import import_librispeech
    from engine.stages import run_experiment
    from engine.testing import make_librispeech_tree

    recipe = load_experiment(ROOT / "experiments" / "librispeech.toml")
    train = recipe.stages[0].train
    assert (train.device, train.precision, train.spec_augment) == ("cuda", "bf16", True)
    assert train.max_duration >= 300 and train.speed_perturb > 0 and recipe.data.vocab_size == 500
    tree = tmp_path / "LibriSpeech"
    make_librispeech_tree(tiny, tree, per_split=40)
    corpus = tmp_path / "librispeech"
    import_librispeech(tree, corpus)
    exp = parse_experiment(_twin(recipe.model_dump(), corpus), "librispeech twin")
    lines: list[str] = []
    out = run_experiment(exp, tmp_path / "run", progress=False, log=lines.append)
    assert set(out) == {st.name for st in recipe.stages}
    assert any("training on cpu in bf16" in line for line in lines), lines
    for name in ("eval", "eval-int8"):
        s = out[name]["results"]["test-other"]
        assert s["utterances"] == 3 and s["wer"] >= 0
    assert out["export"]["int8_bytes"] < out["export"]["bytes"]
