"""Runs from experiments: the stage graph, stage identity, sweep grids, run folders.

- ``stage_deps``: the stages each stage waits for (the model it takes, the stage it starts from,
  and for ``evaluate`` an earlier ``export`` of the same model, whose file is the size).
- ``stage_hashes``: a stage's identity is its resolved config, the data, the seed and its inputs'
  identities; two runs of a sweep with the same identity for a stage compute it once.
- ``expand_grid``: ``--grid stages.student.model.preset=student-m,student-s`` (a stage is named by
  its ``name``) and ``--grid seed=1,2`` over one experiment, as a cross product.
- ``prepare_run``: the run folder with its resolved experiment and provenance (config hash, git
  revision, library versions, host, seed); the supervisor registers it from there.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import platform
import secrets
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from engine.config import (SHERPA_FORMAT_VERSION, ConfigError, Experiment, parse_experiment,
                           stage_inputs)

ROOT = Path(__file__).resolve().parents[2]


# bumped when what a stage computes changes under the same config (2: padding no longer leaks
# through the time reduction, buckets from every cut, cosine learning rate by default), so
# ``--reuse`` never hands back a model the current code would not have made. Not bumped for a
# change of random stream alone (the CPU dropout's mask, 2026-12-05): the same recipe draws
# other masks, as another seed would, and computes a model of the same distribution
RECIPE_VERSION = 2
# bumped when the beam search finds other hypotheses (2: several tokens a frame, not one; one
# token a frame cut word pieces at 80 ms frames, 5x the errors of greedy search): it enters the
# identity of the stages that search (beam evaluations; two-pass stages choose their lambda with
# it), and through their inputs that of every stage downstream
SEARCH_VERSION = 2
SEARCHING_KINDS = ("las_train", "las_distill", "finetune")
# the 3-way KD ignored kd.temperature before 2026-12-05 (2: it divides both sides' logits by it):
# a yblank stage with tau != 1 of older code trained at tau = 1 and must not be reused; tau = 1
# identities do not carry it and are unchanged
YBLANK_TEMPERATURE_VERSION = 2


def stage_deps(exp: Experiment) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for i, st in enumerate(exp.stages):
        d = [ref for _, ref in stage_inputs(st)]
        if st.kind == "evaluate":  # the exports whose files it scores (or whose bytes it reports)
            fmt = "torch" if st.runtime in ("torch", "torch-int8") else "sherpa-onnx"
            d += [e.name for e in exp.stages[:i] if e.kind == "export" and e.model == st.model
                  and e.format == fmt]
        deps[st.name] = d
    return deps


def stage_hashes(exp: Experiment) -> dict[str, str]:
    deps, out = stage_deps(exp), {}
    data = exp.data.model_dump(mode="json", exclude_defaults=True)
    for st in exp.stages:
        # defaults left out: a setting added later with a default that keeps the old behaviour
        # does not change the identity of stages computed before it existed
        # where it runs is not what it computes: resources and the device stay out of the
        # identity (its precision stays in: bf16 computes something else)
        dumped = st.model_dump(mode="json", exclude_defaults=True,
                               exclude={"resources": True, "device": True, "train": {"device"},
                                        "seed": True})
        # the seed it runs with, pinned on the stage or the experiment's
        key = {"stage": dumped, "data": data, "seed": exp.seed_of(st),
               "inputs": [out[d] for d in deps[st.name]]}
        key["recipe_version"] = RECIPE_VERSION  # the encoder's numerics or the recipe changed
        if st.kind in SEARCHING_KINDS or (st.kind == "evaluate" and st.decoding == "beam"):
            key["search_version"] = SEARCH_VERSION
        kd = getattr(st, "kd", None)
        if getattr(kd, "loss", None) == "yblank" and getattr(kd, "temperature", 1.0) != 1.0:
            key["yblank_temperature"] = YBLANK_TEMPERATURE_VERSION
        if st.kind == "export" and st.format == "sherpa-onnx":
            key["format_version"] = SHERPA_FORMAT_VERSION  # a changed graph is a new artifact
        out[st.name] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return out


def superseded_stages(config: dict | str | None, stored: dict[str, str | None]) -> set[str]:
    """The stages of a run whose stored identity (``stored``: name -> stage_hash) is not the one
    this code computes from the run's own resolved ``config``: they were computed by an older
    recipe, beam search or export format (``RECIPE_VERSION``, ``SEARCH_VERSION``,
    ``SHERPA_FORMAT_VERSION``), and ``--reuse`` would not return them. Nothing is judged where
    it cannot be: a configuration this code no longer parses, a stage stored without an identity
    or absent from the configuration."""
    try:
        exp = parse_experiment(json.loads(config) if isinstance(config, str) else config or {})
        now = stage_hashes(exp)
    except (ConfigError, ValueError, TypeError, KeyError):
        return set()
    return {name for name, h in stored.items() if h and name in now and now[name] != h}


def config_hash(exp: Experiment) -> str:
    body = exp.model_dump(mode="json")
    body.pop("name", None)
    body.pop("description", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# ----- sweeps -----------------------------------------------------------------------------------
def parse_value(text: str):
    """A grid value as TOML reads it (numbers, booleans, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_grid(specs: list[str]) -> list[tuple[str, list]]:
    grid = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--grid {spec!r}: expected FIELD=VALUE1,VALUE2,...")
        key, values = spec.split("=", 1)
        vals = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if not key.strip() or not vals:
            raise ConfigError(f"--grid {spec!r}: expected FIELD=VALUE1,VALUE2,...")
        grid.append((key.strip(), vals))
    return grid


def set_field(data: dict, path: str, value) -> None:
    """Set ``path`` (dotted; ``stages.NAME.rest`` addresses the stage called NAME) in ``data``."""
    parts = path.split(".")
    node = data
    if parts[0] == "stages":
        if len(parts) < 3:
            raise ConfigError(f"--grid {path}: expected stages.STAGE_NAME.FIELD")
        names = [s.get("name") for s in data.get("stages", [])]
        if parts[1] not in names:
            raise ConfigError(f"--grid {path}: no stage named {parts[1]!r}; stages: "
                              f"{', '.join(map(str, names))}")
        node, parts = data["stages"][names.index(parts[1])], parts[2:]
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--grid {path}: {p!r} is not a table")
    node[parts[-1]] = value


def expand_grid(data: dict, grid: list[tuple[str, list]], source: str
                ) -> list[tuple[dict, Experiment]]:
    """Every combination of the grid's values applied to the experiment ``data``, each parsed
    (and so validated) on its own: ``[(assignment, experiment), ...]``."""
    keys = [k for k, _ in grid]
    out = []
    for combo in itertools.product(*[v for _, v in grid]) if grid else [()]:
        d = copy.deepcopy(data)
        assignment = dict(zip(keys, combo))
        for k, v in assignment.items():
            set_field(d, k, v)
        label = ", ".join(f"{k}={v}" for k, v in assignment.items())
        out.append((assignment, parse_experiment(d, f"{source}{' [' + label + ']' if label else ''}")))
    return out


# ----- run folders ------------------------------------------------------------------------------
def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchaudio", "lhotse", "duckdb", "sentencepiece", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def new_run_id(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{safe}-{secrets.token_hex(2)}"


def prepare_run(exp: Experiment, runs_dir: Path, experiment_path: str = "",
                sweep_id: str | None = None, assignment: dict | None = None,
                executor: str = "local", reuse: bool = False, ray_address: str | None = None,
                storage: Path | None = None) -> dict:
    """Create the run folder; returns the run record the supervisor registers. ``reuse``: a
    stage whose identity matches a finished stage of any earlier run is not computed again.
    ``storage``: a folder every node of a cluster reaches; the run folder is made there and
    ``runs_dir/RUN_ID`` links to it."""
    run_id = new_run_id(exp.name)
    run_dir = (Path(storage).resolve() if storage else Path(runs_dir)) / run_id
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "spool").mkdir()
        if storage:
            Path(runs_dir).mkdir(parents=True, exist_ok=True)
            (Path(runs_dir) / run_id).symlink_to(run_dir, target_is_directory=True)
    except OSError as e:
        raise ConfigError(f"{run_dir}: cannot create the run folder: {e.strerror or e}") from None
    from engine.data.corpus import write_json_atomic

    write_json_atomic(run_dir / "experiment.json", exp.model_dump(mode="json"))
    deps, hashes = stage_deps(exp), stage_hashes(exp)
    record = {
        "run_id": run_id, "name": exp.name, "experiment": experiment_path,
        "sweep_id": sweep_id, "config_hash": config_hash(exp), "git_rev": git_revision(),
        "versions": library_versions(), "host": platform.node(), "seed": exp.seed,
        "executor": executor, "ray_address": ray_address, "run_dir": str(run_dir),
        "created": time.time(),
        "assignment": assignment or {}, "reuse": reuse,
        "stages": [{"name": s.name, "kind": s.kind, "position": i, "deps": deps[s.name],
                    "stage_hash": hashes[s.name]} for i, s in enumerate(exp.stages)],
    }
    write_json_atomic(run_dir / "run.json", record)
    return record
