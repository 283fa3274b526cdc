"""Build the API reference from the docstrings (pdoc) and fail on any problem.

``python tools/api_docs.py OUT_DIR`` writes HTML for every public module of mixstream to
``OUT_DIR`` (``make docs``: ``docs/api/``) and exits 1 if pdoc warned (an annotation it cannot
resolve, a module that does not import) or a docstring cross-reference
(``:class:`~mixstream.X```, ``:func:`.odm.odm_weights```, ...) names nothing that exists. CI runs
it through ``tests/test_api_docs.py``, so a broken docstring fails ``make test``.

Why a script and not the bare ``pdoc`` command: pdoc only *warns* (exit code 0), and it does not
check Sphinx-style roles at all, which is how these docstrings link to each other.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import typing
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import pdoc
import pdoc.doc
import pdoc.render

ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|data|attr|exc|obj):`~?([^`<>]+?)`")
#: an inline literal: a role quoted as code (````:class:`X````) is an example, not a reference
LITERAL = re.compile(r"``(?!`).+?``(?!`)", re.S)
#: pdoc's notice when a package spec already covered a submodule we list too (harmless)
_HARMLESS = ("has already been added",)
#: pdoc cannot place the fields a TypedDict inherits on Python < 3.12 (TypedDict's __mro__ lacks
#: the bases; pdoc.doc.Class._taken_from says so): the page is right, the source link is not
_TAKEN_FROM = re.compile(r"Cannot determine where (\S+)\.\w+ is taken from")


def public_modules(package: str = "mixstream") -> list[str]:
    """The package and every submodule without a ``_private`` path component."""
    pkg = importlib.import_module(package)
    return [package] + sorted(
        m.name for m in pkgutil.walk_packages(pkg.__path__, f"{package}.")
        if not any(part.startswith("_") for part in m.name.split(".")))


def _lookup(fullname: str) -> object:
    parts = fullname.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _harmless(message: str) -> bool:
    if any(h in message for h in _HARMLESS):
        return True
    m = _TAKEN_FROM.search(message)
    return m is not None and sys.version_info < (3, 12) and typing.is_typeddict(
        _lookup(m.group(1)))


def _walk(doc: pdoc.doc.Doc) -> Iterator[pdoc.doc.Doc]:
    yield doc
    if isinstance(doc, pdoc.doc.Namespace):
        for member in doc.own_members:
            yield from _walk(member)


def _resolves(target: str, where: pdoc.doc.Doc, known: set[str]) -> bool:
    """Whether a role target names something: fully qualified, relative to the documented
    module or class, or (as Sphinx does for ``.name``) by a unique-enough dotted suffix."""
    name = target.strip().removesuffix("()")
    if name.startswith("."):
        return any(k.endswith(name) for k in known)
    module = where.modulename
    scopes = [f"{where.fullname}.{name}"] if isinstance(where, pdoc.doc.Class) else []
    owner = where.fullname.rsplit(".", 1)[0]
    scopes += [f"{owner}.{name}", f"{module}.{name}", name]
    if any(s in known for s in scopes) or any(k.endswith("." + name) for k in known):
        return True
    parts = name.split(".")  # outside the documented set: torch.Tensor, numpy.ndarray, ...
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def check_references(modules: Iterable[pdoc.doc.Module]) -> list[str]:
    """``module: role target`` for every cross-reference that names nothing."""
    docs = [d for m in modules for d in _walk(m)]
    known = {d.fullname for d in docs} | {m.modulename for m in modules}
    bad = []
    for d in docs:
        if isinstance(d, (pdoc.doc.Class, pdoc.doc.Function)) and d.obj.__doc__ is None:
            continue  # no docstring of its own (pdoc shows the inherited one: not ours to check)
        for role, target in ROLE.findall(LITERAL.sub("", d.docstring)):
            if not _resolves(target, d, known):
                bad.append(f"{d.fullname}: unresolved :{role}:`{target}`")
    return sorted(set(bad))


def build(out_dir: Path, modules: list[str]) -> list[str]:
    """Write the HTML reference for ``modules`` to ``out_dir``; return the problems found."""
    pdoc.render.configure(docformat="restructuredtext", search=True, show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=out_dir)
        docs = [pdoc.doc.Module(importlib.import_module(m)) for m in modules]
        problems = check_references(docs)
    for w in caught:
        msg = str(w.message)
        if not _harmless(msg):
            problems.append(f"{w.category.__name__}: {msg}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the mixstream API reference with pdoc.")
    parser.add_argument("out", type=Path, help="output directory (make docs: docs/api)")
    parser.add_argument("--modules", nargs="+", help="modules to document (default: every "
                        "public module of mixstream)")
    args = parser.parse_args(argv)
    problems = build(args.out, args.modules or public_modules())
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in the API docs", file=sys.stderr)
        return 1
    print(f"wrote {args.out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
