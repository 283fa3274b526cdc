"""Every import in mixstream points down the layers of docs/ARCHITECTURE.md, and no package
imports itself back through another (checked for modules inside a package too).

Read from the source with ``ast``, so lazy imports inside functions and ``TYPE_CHECKING``
imports count too: an upward edge that only runs late is still an upward dependency. The
package root (``mixstream/__init__.py``) is the public facade and may name anything lazily.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mixstream

ROOT = Path(mixstream.__file__).parent

# bottom to top; a unit may import its own layer's units and any lower layer's
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_lazy", "data"),
    ("remote",),
    ("sources",),
    ("plan",),
    ("batch", "checkpoint", "topology", "batching", "ring", "walker", "tracker", "channel", "reservoir"),
    ("reading", "threads", "corpus", "config", "position", "link"),
    ("session", "attachments", "resume"),
    ("stream",),
    ("loader", "stages", "losses", "feedback"),
    ("model", "laws", "observe", "validation"),
    ("controllers",),
    ("integrations",),
    ("shards",),
    ("demo", "cli"),
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """``mixstream.sources.native.reader`` -> ``sources``; ``mixstream.stream`` -> ``stream``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def imports() -> dict[str, set[str]]:
    """Module -> the mixstream modules it imports (anywhere in its source)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        module = ".".join(parts)
        package = parts if is_pkg else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] == "mixstream":
                    edges[module].add(target)
            elif isinstance(node, ast.Import):
                edges[module].update(a.name for a in node.names
                                     if a.name.split(".")[0] == "mixstream")
    return edges


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in imports()} | {unit_of(t) for ts in imports().values() for t in ts}
    units.discard("<root>")
    assert units <= set(LAYER_OF), f"units without a layer: {sorted(units - set(LAYER_OF))}"


def test_imports_point_down():
    upward = []
    for module, targets in imports().items():
        src = unit_of(module)
        if src == "<root>":
            continue
        for target in targets:
            dst = unit_of(target)
            if dst == "<root>":  # the public facade: only the applications on top use it
                if LAYER_OF[src] < len(LAYERS) - 1:
                    upward.append(f"{module} -> {target} (the package root is the top)")
            elif LAYER_OF[dst] > LAYER_OF[src]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def test_no_package_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in imports().items():
        src = unit_of(module)
        if src == "<root>":
            continue
        graph[src].update(unit_of(t) for t in targets if unit_of(t) not in (src, "<root>"))
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt])
                              if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "package cycles:\n" + "\n".join(cycles)


def test_no_module_cycles_inside_a_package():
    """Lazy imports hide module cycles (shards/inputs -> readers -> inputs was one)."""
    edges = imports()
    modules = set(edges)
    cycles = []
    state: dict[str, int] = {}

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for raw in sorted(edges.get(node, ())):
            nxt = resolve(raw)
            if nxt is None or nxt == node or nxt == "mixstream" or nxt in node.split(".")[0]:
                continue
            if node.startswith(nxt + "."):  # a module importing its own package's __init__
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] if nxt in path else [])
                              + f" ... {node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(modules):
        if node not in state and node != "mixstream":
            visit(node, [])
    assert not cycles, "module cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_an_upward_edge(tmp_path, monkeypatch):
    """The checker itself can fail: a plan module importing the stream is reported."""
    fake = tmp_path / "mixstream"
    (fake / "plan").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "plan" / "__init__.py").write_text("")
    (fake / "plan" / "bad.py").write_text("from ..stream import MixStream\n")
    (fake / "stream.py").write_text("from .plan import bad\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    try:
        test_imports_point_down()
    except AssertionError as e:
        assert "mixstream.plan.bad -> mixstream.stream" in str(e)
    else:
        raise AssertionError("an upward import went unnoticed")
    try:
        test_no_package_cycles()
    except AssertionError as e:
        assert "plan" in str(e) and "stream" in str(e)
    else:
        raise AssertionError("a package cycle went unnoticed")
