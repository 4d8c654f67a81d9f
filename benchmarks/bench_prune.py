"""Masked is not removed: what pruning buys in bytes and in speed, measured side by side.

One trained model (``--model``, default the teacher of the newest ``progressive`` run, else a
random student-m) on real test-clean utterances of the demo corpus, at 1 thread, in one process:

- dense, as it is;
- magnitude-sparse at 60% and 90% (``engine.compress.prune_magnitude``: the zeros sit in the
  same dense tensors, so dense kernels do the same work);
- L0-masked at 50% (hard-concrete gates acting through hooks: the same work, more hooks);
- physically pruned at 30%, 50% and 70% (``prune_to_dense``: the smaller dense model).

For each: artifact bytes (sparse tensors stored as bitmask + values), parameters, MACs per
second of audio (counted from the operators that ran) and RTF (encode + greedy, median of
``--repeats`` passes). The gates of the structured rows are set from the weights (units ranked by
the norm of their outgoing weights), not trained: this measures cost, not accuracy; accuracy is
in the ``sparse_kd`` / ``l0_structured`` results.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from bench_data import report  # noqa: E402

from engine.compress.accounting import account  # noqa: E402
from engine.compress.prune_l0 import L0Pruner, prunable_params  # noqa: E402
from engine.compress.prune_magnitude import MagnitudePruner  # noqa: E402
from engine.config import L0Config, MagnitudeConfig  # noqa: E402
from engine.export import export_torch  # noqa: E402
from engine.checkpoint import load_model, save_model  # noqa: E402


def newest_teacher() -> Path | None:
    from engine.stages import lab_home
    from engine.store import read

    rows = read(lab_home() / "lab.duckdb", """SELECT s.outputs FROM stages s JOIN runs r USING (run_id)
        WHERE r.name = 'progressive' AND s.name = 'teacher' AND s.state = 'done'
        ORDER BY r.created DESC LIMIT 1""")
    import json

    return Path(json.loads(rows[0]["outputs"])["model"]) if rows else None


def utterances(n: int) -> list[torch.Tensor]:
    from engine.stages import resolve_corpus, split_features

    cuts = split_features(resolve_corpus("builtin:demo"), "test-clean").subset(first=n)
    return [torch.as_tensor(c.load_features()) for c in cuts]


def ranked_gates(pruner: L0Pruner, keep: float) -> None:
    """Open the ``keep`` share of every unit group with the largest outgoing-weight norms, close
    the rest (modules stay on): a structure to time, not a trained result."""
    student = pruner.student
    with torch.no_grad():
        for key, gate in pruner.gates.items():
            parts = key.split("_")
            if len(parts) < 3:
                gate.log_alpha.fill_(10.0)
                continue
            blk = student.encoder.blocks[int(parts[0])]
            mod = getattr(blk, parts[1])
            if parts[1] in ("ffn1", "ffn2"):
                score = mod.down.weight.norm(dim=0)
            elif parts[1] == "attn":
                score = mod.out.weight.view(mod.out.weight.shape[0], mod.heads, -1).norm(dim=(0, 2))
            else:
                score = mod.pw2.weight.norm(dim=0)
            k = max(1, round(keep * score.numel()))
            la = torch.full_like(score, -10.0)
            la[score.topk(k).indices] = 10.0
            gate.log_alpha.copy_(la)


def measure(name: str, model, feats, tmp: Path, repeats: int) -> dict:
    path = save_model(model, tmp / f"{name}.pt")
    info = export_torch(path, tmp / name)
    deployed, _ = load_model(info["artifact"])
    acc = account(deployed, feats, Path(info["artifact"]), repeats=repeats)
    return {"name": name, **acc, "format": info["format"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    src = a.model or newest_teacher()
    if src is not None:
        base, _ = load_model(src)
        what = f"{src}"
    else:
        from engine.models.build import build, preset

        base = build(preset("student-m", vocab_size=256)).for_inference().eval()
        what = "a random student-m (no progressive teacher in this lab)"
    feats = utterances(a.utterances)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results.append(measure("dense", base, feats, tmp, a.repeats))
        for s in (0.6, 0.9):
            m = copy.deepcopy(base)
            p = MagnitudePruner(m, MagnitudeConfig(sparsity=s, end_step=1, every=1))
            p.after_step(1)
            results.append(measure(f"magnitude {s:.0%}", m, feats, tmp, a.repeats))
        m = copy.deepcopy(base)
        p = L0Pruner(m, L0Config(target=0.5), max_steps=1)
        ranked_gates(p, 0.5)
        p.eval()
        masked = account(m, feats, None, repeats=a.repeats)
        results.append({"name": "L0 masked 50% (hooks)", **masked, "bytes": None,
                        "format": "(not exported: the masked model is the dense one)"})
        for keep in (0.7, 0.5, 0.3):
            m = copy.deepcopy(base)
            p = L0Pruner(m, L0Config(target=1 - keep), max_steps=1)
            ranked_gates(p, keep)
            small = p.pruned_copy(m)
            r = measure(f"L0 removed {1 - keep:.0%}", small, feats, tmp, a.repeats)
            r["sparsity"] = 1 - prunable_params(small) / prunable_params(base)
            results.append(r)
    dense = results[0]
    for r in results:
        speed = dense["rtf"] / r["rtf"]
        macs = 1 - r["macs_per_second"] / dense["macs_per_second"]
        size = "-" if r["bytes"] is None else f"{r['bytes']:,} bytes ({r['bytes'] / dense['bytes']:.2f}x)"
        rows.append((r["name"], f"{size}, {r['params']:,} params ({r['nonzero_params']:,} non-zero), "
                                f"{r['macs_per_second'] / 1e6:.1f} M MACs/s ({macs:.0%} fewer than dense), "
                                f"RTF {r['rtf']:.4f} ({speed:.2f}x dense speed)"
                                + (f", {r['sparsity']:.0%} of prunable parameters removed"
                                   if "sparsity" in r else "")))
        print(rows[-1], flush=True)
    l0 = next(r for r in results if r["name"] == "L0 removed 50%")
    rows.append(("inference cost of the 50% L0 model (paper: 28% less)",
                 f"{1 - l0['macs_per_second'] / dense['macs_per_second']:.0%} fewer MACs, "
                 f"{1 - l0['rtf'] / dense['rtf']:.0%} less time at 1 thread"))
    rows.append(("setup", f"{what}; {a.utterances} test-clean utterances of the demo corpus, one at "
                          f"a time, 1 thread, median of {a.repeats} passes after a warm-up"))
    report("Pruning: bytes and speed, masked vs removed", "`benchmarks/bench_prune.py`", rows)


if __name__ == "__main__":
    main()
