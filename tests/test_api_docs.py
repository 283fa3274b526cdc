"""The API reference builds from the docstrings without a warning or a dangling reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pdoc", reason="pdoc is in the dev extra (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "api_docs.py"


def _build(out: Path, *extra: str, pythonpath: Path | None = None
           ) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(TOOL), str(out), *extra], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=240)


def test_api_reference_builds_without_problems(tmp_path):
    res = _build(tmp_path / "api")
    assert res.returncode == 0, res.stderr[-4000:]
    page = (tmp_path / "api" / "mixstream" / "controllers.html").read_text()
    assert "ODM" in page and "StaticMixture" in page
    assert (tmp_path / "api" / "mixstream" / "controllers" / "odm.html").exists()
    assert (tmp_path / "api" / "mixstream" / "stream.html").exists()


def test_broken_docstrings_fail_the_build(tmp_path):
    pkg = tmp_path / "src" / "brokendocs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A package; see :func:`.good.fine`."""\n')
    (pkg / "good.py").write_text(  # + a TypedDict subclass, which pdoc < py3.12 cannot place
        'from typing import TypedDict\n\n\ndef fine() -> int:\n    """Fine."""\n    return 1\n\n\n'
        'class _Base(TypedDict):\n    a: int\n\n\n'
        'class Row(_Base, total=False):\n    """A row."""\n\n    b: int\n')
    (pkg / "bad.py").write_text(
        '"""Uses :class:`~brokendocs.good.Missing` and :func:`fine_typo`; quoted as code,\n'
        '``:func:`not_checked``` is an example."""\n'
        "from __future__ import annotations\n\n\n"
        "def f(x: NotDefined) -> int:\n"
        '    """Returns :class:`torch.Tensor`? No: see :meth:`torch.Tensor.nope`."""\n'
        "    return 1\n")
    res = _build(tmp_path / "api", "--modules", "brokendocs", "brokendocs.good", "brokendocs.bad",
                 pythonpath=tmp_path / "src")
    assert res.returncode == 1
    err = res.stderr
    assert "brokendocs.bad: unresolved :class:`brokendocs.good.Missing`" in err
    assert "brokendocs.bad: unresolved :func:`fine_typo`" in err
    assert "brokendocs.bad.f: unresolved :meth:`torch.Tensor.nope`" in err
    assert "Error parsing type annotation NotDefined" in err
    assert ".good.fine" not in err and "torch.Tensor`" not in err and "not_checked" not in err
    assert "Row" not in err
    assert "4 problem(s)" in err
