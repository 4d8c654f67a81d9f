"""experiments/seeds.toml, the five papers from one teacher, and its tiny twin: the twin has the
same graph (stage names, kinds, inputs, pinned seeds, what each method does), a seed sweep shares
the teacher and retrains every headline arm, and the twin runs end to end on the session's tiny
corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_experiment, parse_experiment, stage_inputs
from engine.runner.graph import stage_hashes
from engine.stages import run_experiment

ROOT = Path(__file__).resolve().parents[1]
HEADLINE_ARMS = ["s1", "s2", "s3", "s3-direct", "s3-scratch", "sparse-60", "sparse-60-kd",
                 "sparse-90", "sparse-90-kd", "l0-50", "l0-50-kd"]


def _graph(exp) -> list[tuple]:
    """What makes the experiment the same study at any size."""
    out = []
    for st in exp.stages:
        what = {}
        for table, keys in (("model", ("blocks", "share", "physical_blocks")),
                            ("kd", ("loss", "layerwise_weight", "schedule")),
                            ("prune", ("sparsity", "target"))):
            t = getattr(st, table, None)
            if t is not None:
                what |= {f"{table}.{k}": getattr(t, k) for k in keys if hasattr(t, k)}
        for k in ("format", "int8", "runtime"):
            if hasattr(st, k):
                what[k] = getattr(st, k)
        out.append((st.kind, st.name, tuple(stage_inputs(st)), st.seed, what))
    return out


def test_the_tiny_twin_has_the_graph_of_seeds_toml():
    big = load_experiment(ROOT / "experiments" / "seeds.toml")
    tiny = load_experiment(ROOT / "experiments" / "tiny_seeds.toml")
    assert _graph(tiny) == _graph(big)
    assert big.data.corpus == "builtin:full" and tiny.data.corpus == "builtin:tiny"


def test_a_seed_sweep_shares_the_teacher_and_retrains_every_headline_arm():
    exp = load_experiment(ROOT / "experiments" / "seeds.toml")
    h0 = stage_hashes(exp)
    h1 = stage_hashes(exp.model_copy(update={"seed": 1}))
    for name in ("teacher", "eval", "teacher-las", "share3", "sparse-60-fullkd"):
        assert h0[name] == h1[name], name  # pinned: computed once for the whole sweep
    for name in HEADLINE_ARMS:
        assert h0[name] != h1[name], name  # each seed trains its own


def _with(path: Path, *grid: str):
    """The experiment at ``path`` with ``--grid``-style single-value overrides."""
    from engine.config import toml_data
    from engine.runner.graph import expand_grid, parse_grid

    [(_, exp)] = expand_grid(toml_data(path.read_text(), str(path)), parse_grid(list(grid)),
                             str(path))
    return exp


@pytest.mark.parametrize("dev_study,grid,shared", [
    # the KD weight / temperature was chosen at the first study's 2,000 updates, the schedule at
    # 6,000: at the study's horizon and schedule, its s3-direct is the study's
    ("seeds_beta.toml", ["stages.s3-direct.train.max_steps=6000",
                         "stages.s3-direct.kd.schedule=cosine"],
     ("teacher", "s3-direct", "export-s3-direct")),
    # the horizon sweep's 6,000-update s3 from scratch is the study's own (its s3-direct kept
    # the constant weight the study had then)
    ("seeds_horizon.toml", ["stages.s3-direct.train.max_steps=6000",
                            "stages.s3-scratch.train.max_steps=6000"],
     ("teacher", "s3-scratch", "export-s3-scratch"))])
def test_the_dev_studies_reuse_the_studys_teacher_and_students_and_never_see_a_test_set(
        dev_study, grid, shared):
    # the dev sweeps, at the study's values, are the study's own stages (so `--reuse` takes
    # them either way), and nothing they choose reads a test set
    study = stage_hashes(load_experiment(ROOT / "experiments" / "seeds.toml"))
    beta = load_experiment(ROOT / "experiments" / dev_study)
    hashes = stage_hashes(_with(ROOT / "experiments" / dev_study, *grid))
    for name in shared:
        assert hashes[name] == study[name], name
    for st in beta.stages:
        splits = list(getattr(st, "splits", []) or []) + list(
            getattr(getattr(st, "train", None), "eval_splits", []) or [])
        assert not [s for s in splits if s.startswith("test")] or st.name == "teacher", st.name


@pytest.fixture(scope="module")
def twin(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_seeds")
    exp = load_experiment(ROOT / "experiments" / "tiny_seeds.toml").model_dump()
    exp["data"]["corpus"] = str(tiny)
    exp = parse_experiment(exp)
    return exp, run_experiment(exp, out, progress=False, log=lambda s: None)


def test_the_tiny_twin_runs_every_method_end_to_end(twin):
    from engine.checkpoint import load_model
    from engine.compress.prune_l0 import prunable_params

    exp, outputs = twin
    assert set(outputs) == {st.name for st in exp.stages}
    # 4: L0 left a real smaller dense model
    base, _ = load_model(outputs["teacher"]["model"], inference=False)
    small, _ = load_model(outputs["l0-50-kd"]["model"], inference=False)
    assert prunable_params(small) < prunable_params(base)
    # 3: the sparse students are as sparse as asked
    assert outputs["sparse-90-kd"]["sparsity"] == pytest.approx(0.9, abs=0.01)
    # 2: the two-pass student rescored its first pass with its own LAS
    assert outputs["eval-s3-deep"]["results"]["test-clean"].get("nbest")
    # 5: the shared, pruned student's int8 files are smaller than the teacher's fp32 ones
    shared = outputs["eval-share3-l0-sherpa-int8"]["results"]["test-clean"]["bytes"]
    teacher = outputs["eval-teacher-sherpa"]["results"]["test-clean"]["bytes"]
    assert shared < teacher
