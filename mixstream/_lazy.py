"""Lazy package exports: a package lists ``{name: submodule}`` and imports a submodule on first use.

Why: ``from mixstream.controllers import ODM`` should load ODM's few modules, not every
controller with its model/law dependencies (PEP 562 module ``__getattr__``). Packages pair this
with ``if TYPE_CHECKING:`` imports so that type checkers and IDEs still see the names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``exports`` maps a name to its submodule
    (relative to ``package``, e.g. ``".odm"``). A resolved name is cached in the package."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
