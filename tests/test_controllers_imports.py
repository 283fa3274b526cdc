"""Import cost and import direction of the controller layer and the packages under it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mixstream.controllers as controllers
import mixstream.laws as laws
import mixstream.model as model

PKG = Path(__file__).resolve().parents[1] / "mixstream"


def _loaded_after(statement: str) -> list[str]:
    code = (f"import sys\n{statement}\n"
            "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] == 'mixstream')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_importing_one_controller_loads_few_modules():
    # before the lazy package: 37 mixstream modules (every controller, all of laws/ and model/)
    mods = _loaded_after("from mixstream.controllers import ODM")
    assert len(mods) <= 8, mods
    assert not [m for m in mods if m.startswith(("mixstream.laws", "mixstream.model",
                                                 "mixstream.controllers.acodm"))], mods


@pytest.mark.parametrize("pkg", [controllers, laws, model], ids=lambda p: p.__name__)
def test_every_lazy_export_resolves(pkg):
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
        assert name in dir(pkg)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pkg.nope  # noqa: B018


def _imports(path: Path) -> set[str]:
    """Absolute mixstream module names imported by ``path`` (also inside functions)."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    pkg = pkg.removesuffix(".__init__")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] == "mixstream"}


# package -> packages above it (it must not import them)
ABOVE = {
    "observe": ("controllers", "integrations", "cli", "demo"),
    "validation": ("controllers", "integrations", "cli", "demo"),
    "losses": ("controllers", "integrations", "cli", "demo"),
    "model": ("controllers", "integrations", "cli", "demo", "observe", "validation"),
    "laws": ("controllers", "integrations", "cli", "demo", "model"),
    "controllers": ("integrations", "cli", "demo"),
    "integrations": ("cli", "demo"),
}


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_imports_point_down(layer):
    files = sorted((PKG / layer).rglob("*.py")) if (PKG / layer).is_dir() else [
        PKG / f"{layer}.py"]
    bad = [(f.name, m) for f in files for m in _imports(f)
           if m == "mixstream" or m.split(".")[1] in ABOVE[layer]]
    assert not bad, f"{layer} imports upward: {bad}"
