"""Objects whose state travels in a stream's checkpoint (controllers, loggers, a StagePlan).

One checkpoint then restores the data position and everything that decides the mixture, so
resuming a controller without its stream (or the reverse) cannot happen. States are matched by
name, never by position: a checkpoint with other objects attached is an error naming both sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Attachments:
    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}

    def add(self, obj: Any, name: str | None = None) -> None:
        """Attach ``obj`` under ``name`` (default: the class name, numbered if taken)."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"{type(obj).__name__} has no state_dict/load_state_dict")
        if any(other is obj for other in self._objects.values()):
            return
        base = name or type(obj).__name__
        key, i = base, 1
        while key in self._objects:
            if name is not None:
                raise ValueError(f"an object is already attached as {name!r}")
            i += 1
            key = f"{base}#{i}"
        self._objects[key] = obj

    def remove(self, obj: Any) -> None:
        for key, other in list(self._objects.items()):
            if other is obj:
                del self._objects[key]

    def items(self) -> dict[str, Any]:
        return dict(self._objects)

    def get_state(self) -> dict[str, Any]:
        return {k: obj.state_dict() for k, obj in self._objects.items()}

    def check_names(self, attached: Mapping[str, Any]) -> None:
        """Refuse a checkpoint naming objects not attached here (before anything changes)."""
        missing = [k for k in attached if k not in self._objects]
        if missing and "stages" not in attached:  # a StagePlan attaches its stage's controller
            raise ValueError(self._mismatch(attached))

    def check_remappable(self) -> None:
        """Refuse a domain-set change an attached object cannot follow."""
        for key, obj in self._objects.items():
            if not hasattr(obj, "remap_state"):
                raise ValueError(f"the attached {key!r} ({type(obj).__name__}) cannot carry "
                                 f"its state into another domain set (no remap_state)")

    def remap(self, attached: Mapping[str, Any], old: list[str], new: list[str]
              ) -> dict[str, Any]:
        """The states re-keyed from domain set ``old`` to ``new`` by each object."""
        out = {}
        for key, sub in attached.items():
            remap = getattr(self._objects.get(key), "remap_state", None)
            if remap is None:
                raise ValueError(
                    f"the domain set changed ({old} -> {new}) but the attached {key!r} "
                    f"({type(self._objects.get(key)).__name__}) cannot carry its state over (no "
                    f"remap_state); attach it after load_state_dict to start it fresh")
            out[key] = remap(sub, old, new)
        return out

    def load(self, attached: Mapping[str, Any]) -> None:
        """Load states by name; an object may attach others while it loads (a StagePlan
        creates its stage's controller), so load until nothing new appears."""
        done: set[str] = set()
        while True:
            todo = [k for k in attached if k in self._objects and k not in done]
            if not todo:
                break
            for key in todo:
                self._objects[key].load_state_dict(attached[key])
                done.add(key)
        if set(attached) - done or set(self._objects) - set(attached):
            raise ValueError(self._mismatch(attached))

    def _mismatch(self, attached: Mapping[str, Any]) -> str:
        return (f"checkpoint has attached states {sorted(attached)}, this stream has "
                f"{sorted(self._objects)}; attach the same controllers (same names) before "
                f"loading")
