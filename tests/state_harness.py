"""One save/load round-trip harness for every stateful component (after torchdata.nodes'
``run_test_save_load_state``).

A component is described by a :class:`Stateful`: how to build a fresh one, one ``step`` (its
observable output), how to read its state and how to load a state into a fresh one (or build one
from it: ``load`` returns the component to continue with, so ``Cls.from_state(state)`` fits as
well as ``obj.load_state_dict(state)``). :func:`check_state_round_trip` then asserts, for ``k``
steps before the save and ``m`` after:

* the state is plain Python (:func:`mixstream.checkpoint.check_plain`), survives ``json`` and
  ``torch.save`` + ``torch.load(weights_only=True)`` unchanged (exact floats, no tuples);
* it is a snapshot: running on after the save does not change the saved object;
* a fresh component loaded with it produces the same ``m`` outputs as the uninterrupted one,
  and ends in the same state;
* loading then saving gives the state back (idempotent); loading it twice into the same
  component, or into the component that ran on past it, continues the same way.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.checkpoint import check_plain

T = TypeVar("T")


@dataclass
class Stateful(Generic[T]):
    """How the harness drives one kind of component."""

    make: Callable[[], T]
    step: Callable[[T], Any]
    get_state: Callable[[T], Any]
    load: Callable[[T, Any], T]  # (a fresh component from ``make``, state) -> the one to run
    close: Callable[[T], None] = lambda _: None  # release workers, files ...


def comparable(x: Any) -> Any:
    """Outputs as plain nested Python (tensors and arrays as lists) so ``==`` compares values."""
    if isinstance(x, torch.Tensor):
        return ("tensor", str(x.dtype), x.tolist())
    if isinstance(x, np.ndarray):
        return ("array", str(x.dtype), x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Mapping):
        return {k: comparable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [comparable(v) for v in x]
    return x


def torch_round_trip(state: Any) -> Any:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def json_round_trip(state: Any) -> Any:
    return json.loads(json.dumps(state, allow_nan=False))


def first_difference(a: Any, b: Any, path: str = "state") -> str | None:
    """Where two plain values first differ (for assertion messages), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}[{key!r}] only in {'the second' if key in b else 'the first'}"
            found = first_difference(a[key], b[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} != {len(b)}: {a!r:.300} != {b!r:.300}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if type(a) is not type(b) or a != b:
        return f"{path}: {a!r:.300} != {b!r:.300}"
    return None


def _same(a: Any, b: Any, what: str) -> None:
    diff = first_difference(a, b)
    assert diff is None, f"{what}: {diff}"


def _steps(spec: Stateful[T], obj: T, n: int) -> list:
    return [comparable(spec.step(obj)) for _ in range(n)]


def check_state_round_trip(spec: Stateful[T], k: int, m: int) -> None:
    """Save after ``k`` steps, resume in a fresh component; the next ``m`` steps must agree."""
    obj = spec.make()
    live: list[Any] = [obj]
    try:
        _steps(spec, obj, k)
        state = spec.get_state(obj)
        check_plain(state)
        frozen = copy.deepcopy(state)
        for name, moved in (("torch.load(weights_only=True)", torch_round_trip(state)),
                            ("json", json_round_trip(state))):
            assert moved == state, f"the state changes through {name}"
            check_plain(moved)
        ref = _steps(spec, obj, m)
        ref_end = spec.get_state(obj)
        _same(state, frozen, "the saved state changed when the component ran on (aliasing)")

        saved = json_round_trip(torch_round_trip(state))  # what a resumed run reads
        fresh = spec.load(spec.make(), saved)
        live.append(fresh)
        _same(spec.get_state(fresh), state, "load then save does not give the state back")
        _same(_steps(spec, fresh, m), ref, f"resumed after {k} steps, the next {m} diverge")
        _same(spec.get_state(fresh), ref_end, "the resumed component ends in another state")

        twice = spec.load(spec.load(spec.make(), copy.deepcopy(saved)), copy.deepcopy(saved))
        live.append(twice)
        _same(_steps(spec, twice, m), ref, "loading the state twice continues differently")

        used = spec.load(obj, copy.deepcopy(saved))  # rewind the component that ran on
        live.append(used)
        _same(_steps(spec, used, m), ref, "loaded into a component that ran on, it diverges")
    finally:
        for o in {id(o): o for o in live}.values():
            spec.close(o)


def rounds(max_k: int, max_m: int, examples: int = 4) -> Callable[[Callable], Callable]:
    """Decorate a test taking ``k`` (steps before the save, ``0..max_k``) and ``m`` (after it,
    ``1..max_m``), drawn by hypothesis; few examples, each a whole save/resume cycle."""

    def deco(fn: Callable) -> Callable:
        drawn = given(k=st.integers(0, max_k), m=st.integers(1, max_m))(fn)
        return settings(max_examples=examples, deadline=None, database=None)(drawn)

    return deco
