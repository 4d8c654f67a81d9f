from pathlib import Path

import pytest

from engine.config import ConfigError, load_experiment, parse_experiment

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_experiment_parses():
    files = sorted((ROOT / "experiments").glob("*.toml"))
    assert {"tiny.toml", "demo.toml", "teacher.toml"} <= {f.name for f in files}
    for f in files:
        exp = load_experiment(f)
        assert exp.stages


@pytest.mark.parametrize("text,message", [
    ("name = 'x'\n[[stages]\n", "invalid TOML"),
    ("[[stages]]\nkind = 'quantize'\nname = 'a'\n",
     "stages[0].kind: unknown stage kind 'quantize'; allowed: distill, evaluate, export, "
     "finetune, las_distill, las_train, prune_l0, prune_magnitude, train"),
    ("[[stages]]\nkind = 'train'\nname = 'a'\n[stages.train]\nlearning_rate = 1\n",
     "stages[0].train.learning_rate: unknown key"),
    ("[[stages]]\nkind = 'train'\nname = 'a'\n[stages.model]\npreset = 'huge'\n",
     "stages[0].model.preset: 'huge' is not allowed"),
    ("[[stages]]\nkind = 'evaluate'\nname = 'e'\nmodel = 'nope'\n",
     "stages[0].model: no earlier stage named 'nope'"),
    ("[data]\ncorpus = 'builtin:tiny'\nvocab = 3\n[[stages]]\nkind = 'train'\nname = 'a'\n",
     "data.vocab: unknown key"),
    ("[[stages]]\nkind = 'train'\nname = 'a'\n[[stages]]\nkind = 'train'\nname = 'a'\n",
     "duplicate stage name 'a'"),
    ("[[stages]]\nkind = 'train'\nname = 'a'\n[stages.train]\nmax_steps = 0\n",
     "stages[0].train.max_steps: Input should be greater than or equal to 1 (got 0)"),
])
def test_bad_experiments_name_the_key_and_value(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_experiment(f)
    assert str(e.value).startswith(str(f)) and message in str(e.value), str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "nope.toml")


def test_a_kd_table_keeps_the_stage_kind_s_own_defaults(tmp_path):
    # prune_l0's kd defaults to layerwise KD 1.0 and no output KD; a [stages.kd] that sets only
    # the weight must keep both (it used to fall back to KDConfig's class defaults: yblank, 0.0)
    f = tmp_path / "l0.toml"
    f.write_text("[[stages]]\nkind = 'train'\nname = 't'\n"
                 "[[stages]]\nkind = 'prune_l0'\nname = 'p'\nmodel = 't'\nteacher = 't'\n"
                 "[stages.kd]\nweight = 0.5\n"
                 "[[stages]]\nkind = 'prune_l0'\nname = 'q'\nmodel = 't'\n"
                 "[stages.kd]\nlayerwise_weight = 0.0\nloss = 'full'\n")
    p, q = load_experiment(f).stages[1:]
    assert (p.kd.loss, p.kd.layerwise_weight, p.kd.weight) == ("none", 1.0, 0.5)
    assert (q.kd.loss, q.kd.layerwise_weight) == ("full", 0.0)  # what the file says wins
    # an unknown key inside the table is still named
    f.write_text("[[stages]]\nkind = 'train'\nname = 't'\n"
                 "[[stages]]\nkind = 'prune_l0'\nname = 'p'\nmodel = 't'\n[stages.kd]\nwieght = 1\n")
    with pytest.raises(ConfigError, match=r"stages\[1\].kd.wieght: unknown key"):
        load_experiment(f)


def test_numbers_must_be_written_as_numbers():
    # booleans are not step counts and strings are not rates (TOML has numbers)
    base = {"name": "x", "stages": [{"kind": "train", "name": "t"}]}
    for table, field in (({"max_steps": True}, r"max_steps = True: expected an integer"),
                         ({"peak_lr": "3e-3"}, r"peak_lr = '3e-3': expected a number"),
                         ({"max_minutes": False}, r"max_minutes = False: expected a number")):
        base["stages"][0]["train"] = table
        with pytest.raises(ConfigError, match=r"stages\[0\]\.train: " + field):
            parse_experiment(base)
    with pytest.raises(ConfigError, match="seed = True: expected an integer"):
        parse_experiment({**base, "stages": [{"kind": "train", "name": "t"}], "seed": True})
    base["stages"][0]["train"] = {"peak_lr": 1, "max_steps": 5}  # an integer rate is a number
    assert parse_experiment(base).stages[0].train.peak_lr == 1.0


def test_evaluate_refuses_zero_or_negative_counts(tmp_path):
    import subprocess
    import sys

    for args in (["--max-utterances", "0"], ["--max-utterances", "-1"], ["--beam", "0"]):
        p = subprocess.run([sys.executable, "-m", "engine.cli", "evaluate", str(tmp_path / "m.pt"),
                            "--data", "builtin:tiny", *args], capture_output=True, text=True)
        assert p.returncode == 2 and args[0] in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_what_fails_inside_a_stage_is_refused_at_submission(tmp_path):
    import gzip
    import json

    from engine.config import BUILTIN_TIERS
    from engine.data.synth import SIZES
    from engine.runner.client import submit

    assert set(BUILTIN_TIERS) == set(SIZES)
    train = {"kind": "train", "name": "t", "train": {"max_steps": 2}}
    with pytest.raises(ConfigError, match=r"data: corpus = 'builtin:huge': no such built-in"):
        parse_experiment({"name": "x", "data": {"corpus": "builtin:huge"}, "stages": [train]})
    with pytest.raises(ConfigError, match=r"seed: Input should be greater than or equal to 0"):
        parse_experiment({"name": "x", "seed": -1, "stages": [train]})
    lab = tmp_path / "lab"
    ev = {"kind": "evaluate", "name": "e", "model": "t", "splits": ["test-clean", "nosuch"]}
    with pytest.raises(ConfigError, match=r"e.toml: stages\[1\]\.splits\[1\]: builtin:tiny has "
                                          r"no split 'nosuch'"):
        submit(lab, {"name": "x", "stages": [train, ev]}, "e.toml")
    probe = {**train, "train": {"max_steps": 2, "eval_every": 1, "eval_splits": ["dev", "x"]}}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.train\.eval_splits\[1\]: .* no split 'x'"):
        submit(lab, {"name": "x", "stages": [probe]}, "e.toml")
    # a corpus of its own without a dev split, and a stage whose eval_every needs one
    corpus = tmp_path / "mine"
    (corpus / "manifests").mkdir(parents=True)
    (corpus / "corpus.json").write_text(json.dumps({"kind": "lhotse", "complete": True}))
    for split in ("train", "test-clean"):
        with gzip.open(corpus / "manifests" / f"cuts_{split}.jsonl.gz", "wt"):
            pass
    every = {**train, "train": {"max_steps": 2, "eval_every": 1}}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.train\.eval_every: .* no split 'dev' "
                                          r"\(eval_every evaluates data.dev_split"):
        submit(lab, {"name": "x", "data": {"corpus": str(corpus)}, "stages": [every]}, "e.toml")
    assert not (lab / "runs").exists() or not any((lab / "runs").iterdir())


def test_a_folder_given_as_the_experiment_is_named(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"')
    with pytest.raises(ConfigError, match=r"a folder, not an experiment file; it holds a.toml"):
        load_experiment(tmp_path)
