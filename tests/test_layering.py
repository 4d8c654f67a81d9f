"""Imports run one way (README, "Layout"): every first-party import, lazy ones inside functions
included, goes to a module of the same layer or a lower one, and no modules import each other in
a circle. Parsed from the source, so a new cycle or an upward import fails here, not at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module's layer is that of the longest prefix listed. Losses sit below models
# (the transducer computes its own loss), and checkpoint/decode/evaluate (metrics) below the
# compression methods that score what they make.
LAYERS = [
    ["engine.data", "engine.config", "engine.devices", "engine.fakecuda", "engine.locks",
     "engine.store"],
    ["engine.losses"],
    ["engine.models"],
    ["engine.checkpoint", "engine.decode", "engine.evaluate", "engine.sherpa_graphs"],
    ["engine.compress"],
    ["engine.train", "engine.runtimes", "engine.export"],
    ["engine.stages"],
    ["engine.runner", "engine.report", "engine.testing"],
    ["engine.cli", "app", "streamlit_app"],
]


def layer_of(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (
                    best is None or len(p) > len(best[1])):
                best = (i, p)
    assert best is not None, f"{module}: no layer in tests/test_layering.py's LAYERS; add it"
    return best[0]


def modules() -> dict[str, Path]:
    out = {}
    for p in [*ROOT.glob("engine/**/*.py"), *ROOT.glob("app/**/*.py"), ROOT / "streamlit_app.py"]:
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the first-party modules it imports anywhere in its file."""
    edges = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    parts = parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(parts + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # `from engine import devices` imports the module, not the package's __init__
                targets = subs if all(t in mods for t in subs) else [base] + subs
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
        edges[name] = found
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_modules_import_each_other_in_a_circle():
    edges = imports(modules())
    assert cycles(edges) == []


def test_every_import_goes_to_the_same_layer_or_below():
    mods = modules()
    up = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
          for a, targets in imports(mods).items() for b in sorted(targets)
          if layer_of(b) > layer_of(a)]
    assert up == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    # the parser and the checks on a made-up graph, so a broken check cannot pass silently
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("engine.compress.quantize") < layer_of("engine.runtimes")
    assert layer_of("engine.data.batching") == 0 and layer_of("app.pages.pareto") == 8
    edges = imports(modules())
    assert "engine.models.build" in edges["engine.stages"]  # top-level imports seen
    assert "engine.runtimes" in edges["engine.export"]  # imports inside functions seen
