"""The distill stage end to end (in process, real tiny models and corpus), and the distiller's
pieces on real batches."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_model
from engine.compress.distill import Distiller
from engine.config import KDConfig, ConfigError, load_experiment, parse_experiment
from engine.models.build import build, preset

ROOT = Path(__file__).resolve().parents[2]


def batch(vocab=32, b=3, t=160, u=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 80, generator=g)
    x_lens = torch.tensor([t, t - 40, t - 70])
    tokens = torch.randint(1, vocab, (b, u), generator=g)
    token_lens = torch.tensor([u, u - 2, 3])
    return x, x_lens, tokens, token_lens


@pytest.mark.parametrize("loss", ["pruned", "full"])
@pytest.mark.parametrize("kd,tau", [("yblank", 1.0), ("full", 1.0), ("yblank", 2.0)])
def test_a_student_equal_to_its_teacher_has_zero_kd(loss, kd, tau):
    # at any temperature: teacher and student posteriors are softened alike
    torch.manual_seed(0)
    teacher = build(preset("tiny", vocab_size=32, loss=loss, dropout=0.0))
    student = copy.deepcopy(teacher)
    d = Distiller(student, teacher, KDConfig(loss=kd, temperature=tau)).train()
    out = d(*batch())
    assert float(out["kd"]) == pytest.approx(0.0, abs=1e-3)
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    assert not d.teacher.training  # and stays in eval mode when the distiller trains


def test_kd_pulls_a_student_towards_its_teacher():
    torch.manual_seed(0)
    teacher = build(preset("tiny", vocab_size=32, dropout=0.0))
    torch.manual_seed(1)
    student = build(preset("tiny", vocab_size=32, dropout=0.0))
    d = Distiller(student, teacher, KDConfig(loss="yblank", weight=1.0,
                                             layerwise_weight=1.0)).train()
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=3e-3)
    xs = batch()
    first = None
    for _ in range(15):
        out = d(*xs)
        first = first if first is not None else (float(out["kd"]), float(out["layer"]))
        opt.zero_grad()
        (out["kd"] + out["layer"]).backward()
        opt.step()
    assert float(out["kd"]) < 0.7 * first[0] and float(out["layer"]) < first[1]


def test_distill_needs_the_same_frame_rate():
    teacher = build(preset("tiny", vocab_size=32, time_reduction=False))
    student = build(preset("tiny", vocab_size=32))
    with pytest.raises(ValueError, match="different frame rates"):
        Distiller(student, teacher, KDConfig())(*batch())


def test_config_checks_the_teacher_reference():
    base = {"name": "x", "stages": [
        {"kind": "train", "name": "t"},
        {"kind": "evaluate", "name": "e", "model": "t"},
        {"kind": "distill", "name": "s", "teacher": "e"}]}
    with pytest.raises(ConfigError, match=r"stages\[2\].teacher: stage 'e' is a evaluate stage"):
        parse_experiment(base)
    base["stages"][2]["teacher"] = "nope"
    with pytest.raises(ConfigError, match=r"stages\[2\].teacher: no earlier stage named 'nope'"):
        parse_experiment(base)
    base["stages"][2].update(teacher="t", kd={"loss": "kl"})
    with pytest.raises(ConfigError, match=r"stages\[2\].kd.loss: 'kl' is not allowed"):
        parse_experiment(base)


def test_the_tiny_progressive_chain_runs(tiny, tmp_path):
    from engine.stages import run_experiment

    import re

    exp = load_experiment(ROOT / "experiments" / "tiny_progressive.toml").model_dump()
    exp["data"]["corpus"] = str(tiny)
    lines = []
    outputs = run_experiment(parse_experiment(exp), tmp_path, progress=False, log=lines.append)
    sizes = {}
    for name in ("teacher", "s1", "s2", "s2-direct", "s2-scratch"):
        model, meta = load_model(outputs[name]["model"])
        sizes[name] = sum(p.numel() for p in model.parameters())
        metrics = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
        if name in ("s1", "s2", "s2-direct"):
            assert all("kd" in m and m["kd"] >= 0 for m in metrics), metrics[-1]
    assert sizes["teacher"] > sizes["s1"] > sizes["s2"] == sizes["s2-direct"] == sizes["s2-scratch"]
    # each student was taught by the model its stage names: the chain's s2 by s1, the direct
    # one by the teacher (the parameters logged are those of the model the stage loaded)
    taught = {m[1]: (m[2], int(m[3].replace(",", ""))) for m in (
        re.match(r"(\S+): distilling \S+ from (\S+) \(([\d,]+) parameters\)", line)
        for line in lines) if m}
    assert taught == {"s1": ("teacher", sizes["teacher"]), "s2": ("s1", sizes["s1"]),
                      "s2-direct": ("teacher", sizes["teacher"])}, taught
    for name in ("eval-teacher", "eval-s1", "eval-s2", "eval-s2-direct", "eval-s2-scratch"):
        assert outputs[name]["results"]["test-clean"]["utterances"] == 10


@pytest.mark.parametrize("kd", ["yblank", "full"])
def test_band_kd_equals_lattice_kd_when_the_band_covers_every_u(kd):
    # with prune_range = U + 1 the pruned loss's band is the whole lattice, so KD on the band
    # nodes must be KD on the lattice, term for term
    x, x_lens, tokens, token_lens = batch()
    u1 = tokens.shape[1] + 1
    models = {}
    for loss in ("full", "pruned"):
        pair = []
        for seed in (0, 1):  # teacher, student
            torch.manual_seed(seed)
            pair.append(build(preset("tiny", vocab_size=32, loss=loss, prune_range=u1,
                                     dropout=0.0)))
        models[loss] = pair
    for full, pruned in zip(models["full"], models["pruned"]):
        pruned.load_state_dict(full.state_dict(), strict=False)  # + its simple joiner
    got = {}
    for loss, (teacher, student) in models.items():
        d = Distiller(student, teacher, KDConfig(loss=kd)).eval()
        with torch.no_grad():
            got[loss] = float(d(x, x_lens, tokens, token_lens)["kd"])
    assert got["full"] > 0
    assert got["pruned"] == pytest.approx(got["full"], rel=1e-5)


@pytest.mark.parametrize("kd,tau", [("yblank", 1.0), ("full", 1.0), ("yblank", 2.0)])
def test_the_teacher_reduced_a_few_frames_at_a_time_gives_the_same_kd(kd, tau, monkeypatch):
    # the teacher's joiner output is reduced chunk by chunk inside its no-grad pass; one frame
    # per chunk must give what one chunk for the whole batch gives
    torch.manual_seed(0)
    teacher = build(preset("tiny", vocab_size=32, dropout=0.0))
    torch.manual_seed(1)
    student = build(preset("tiny", vocab_size=32, dropout=0.0))
    d = Distiller(student, teacher, KDConfig(loss=kd, temperature=tau)).eval()
    xs = batch()
    with torch.no_grad():
        whole = float(d(*xs)["kd"])
        sizes = []
        join = teacher.join
        monkeypatch.setattr(teacher, "join", lambda e, p: sizes.append(p.shape[1]) or join(e, p))
        monkeypatch.setattr(d, "_teacher_nodes",
                            lambda *a: Distiller._teacher_nodes(d, *a, chunk_elems=1))
        chunked = float(d(*xs)["kd"])
    assert set(sizes) == {1} and len(sizes) > 1  # one frame at a time
    assert chunked == pytest.approx(whole, rel=1e-5)


def test_the_temperature_reaches_the_3_way_kd():
    # tau softens both sides' 3 posteriors (and scales the term by tau^2): a sweep over
    # stages.*.kd.temperature must change what a yblank student learns from
    torch.manual_seed(0)
    teacher = build(preset("tiny", vocab_size=32, dropout=0.0))
    torch.manual_seed(1)
    student = build(preset("tiny", vocab_size=32, dropout=0.0))
    xs = batch()
    got = {}
    with torch.no_grad():
        for tau in (1.0, 2.0):
            got[tau] = float(Distiller(student, teacher, KDConfig(temperature=tau)).eval()(*xs)["kd"])
        default = float(Distiller(student, teacher, KDConfig()).eval()(*xs)["kd"])
    assert default == got[1.0] and got[2.0] > 0
    assert got[2.0] != pytest.approx(got[1.0], rel=1e-3)
    # the Distiller's chunked teacher path against the whole-lattice function at tau = 2 is
    # test_distill.py's direct computation plus test_a_student_equal_to_its_teacher_has_zero_kd


def test_a_3_way_stage_with_a_temperature_is_never_one_of_older_code(monkeypatch):
    # older code ignored tau in the 3-way KD: its tau != 1 stages trained at tau = 1, so their
    # identity moves with YBLANK_TEMPERATURE_VERSION; tau = 1 and full-KD stages keep theirs
    from engine.runner import graph

    exp = load_experiment(ROOT / "experiments" / "seeds_beta.toml").model_dump()
    exp["stages"][1]["kd"]["temperature"] = 2.0
    exp = parse_experiment(exp)
    base = load_experiment(ROOT / "experiments" / "seeds_beta.toml")
    before = (graph.stage_hashes(exp), graph.stage_hashes(base))
    monkeypatch.setattr(graph, "YBLANK_TEMPERATURE_VERSION", 1)
    after = (graph.stage_hashes(exp), graph.stage_hashes(base))
    assert {k for k in before[0] if before[0][k] != after[0][k]} == {
        "s3-direct", "export-s3-direct", "eval-s3-direct-dev"}
    assert before[1] == after[1]


def test_kd_schedules_move_beta_from_weight_to_final_weight():
    from engine.compress.distill import kd_weight_at

    const = KDConfig(weight=2.0)
    assert [kd_weight_at(const, s, 10) for s in (0, 5, 10)] == [2.0, 2.0, 2.0]
    lin = KDConfig(weight=2.0, schedule="linear")
    assert [kd_weight_at(lin, s, 10) for s in (0, 5, 10, 15)] == [2.0, 1.0, 0.0, 0.0]
    cos = KDConfig(weight=1.0, schedule="cosine", final_weight=3.0)
    assert [kd_weight_at(cos, s, 10) for s in (0, 5, 10)] == pytest.approx([1.0, 2.0, 3.0])
    assert kd_weight_at(cos, 2, 10) < 1.5  # slow at first, unlike linear's 1.4


def test_the_distiller_weighs_its_kd_term_with_the_scheduled_beta():
    torch.manual_seed(0)
    teacher = build(preset("tiny", vocab_size=32, dropout=0.0))
    torch.manual_seed(1)
    student = build(preset("tiny", vocab_size=32, dropout=0.0))
    d = Distiller(student, teacher, KDConfig(weight=3.0, schedule="linear", final_weight=1.0))
    d.train()
    d.set_progress(0, 10)
    start = d(*batch())
    d.set_progress(10, 10)
    end = d(*batch())
    assert float(start["kd"].detach()) > 0
    assert float(start["kd"].detach()) == pytest.approx(float(end["kd"].detach()))
    assert float((start["loss"] - end["loss"]).detach()) == pytest.approx(
        2.0 * float(start["kd"].detach()), rel=1e-4)
    assert d.metrics() == {"kd_weight": 1.0}


def test_a_final_weight_without_a_schedule_is_refused():
    base = {"name": "x", "stages": [
        {"kind": "train", "name": "t"},
        {"kind": "distill", "name": "s", "teacher": "t", "kd": {"final_weight": 0.5}}]}
    with pytest.raises(ConfigError, match=r"stages\[1\].kd: .*final_weight = 0.5 needs schedule"):
        parse_experiment(base)
    base["stages"][1]["kd"] = {"loss": "none", "schedule": "cosine"}
    with pytest.raises(ConfigError, match=r"stages\[1\].kd: .*loss = \"none\" has no output KD"):
        parse_experiment(base)


def test_a_distill_stage_logs_its_scheduled_kd_weight_step_by_step(tiny, tmp_path):
    from engine.stages import run_experiment

    exp = load_experiment(ROOT / "experiments" / "tiny_progressive.toml").model_dump()
    exp["data"]["corpus"] = str(tiny)
    exp["stages"] = [s for s in exp["stages"] if s["name"] in ("teacher", "s1")]
    exp["stages"][0]["train"]["max_steps"] = 4
    exp["stages"][1]["kd"].update(weight=2.0, schedule="linear", final_weight=0.0)
    lines = []
    run_experiment(parse_experiment(exp), tmp_path, progress=False, log=lines.append)
    rows = [json.loads(l) for l in (tmp_path / "s1" / "metrics.jsonl").read_text().splitlines()]
    got = [(r["step"], r["kd_weight"]) for r in rows if "kd_weight" in r]
    # logged after update s, which was taken with beta at step s - 1 of 20
    assert got == [(s, pytest.approx(2.0 * (1 - (s - 1) / 20), abs=1e-5))
                   for s in (5, 10, 15, 20)], got
    assert any("KD yblank x 2.0 (linear to 0.0 at step 20)" in line for line in lines), lines
