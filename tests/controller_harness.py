"""Shared state-dict round-trip harness for controllers.

Runs N feedback steps, saves ``stream.state_dict()`` (which holds the controller state via
``attach``), continues M steps; then builds a fresh stream + controller, loads the saved state
and runs the same M steps. Weights, loss weights and the stream's weight log must be identical.

The saved state must be *plain Python* (dict/list/tuple/str/int/float/bool/None; no numpy
scalars or arrays, no tensors; :func:`assert_plain`), survive ``json`` and go through
``torch.save`` + ``torch.load(weights_only=True)`` — torch's default loader since 2.6 and the
one Lightning uses on resume. ``np.float64`` is a ``float`` subclass, so ``json.dumps`` alone
accepts it; ``weights_only=True`` does not.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from controller_fakes import FakeStream

from mixstream.observe import MixLogger

Make = Callable[[FakeStream], Any]
# loss_fn(step, domain_ids) -> kwargs for feedback (loss=..., mask=..., ref_loss=...)
LossFn = Callable[[int, torch.Tensor], dict]


def _run(stream: FakeStream, ctrl: Any, loss_fn: LossFn, steps: int) -> list:
    out = []
    for _ in range(steps):
        ids = stream.next_batch()
        kwargs = loss_fn(stream.consumed_batches, ids)
        ctrl.feedback(ids, **kwargs)
        lw = ctrl.loss_weights()
        out.append((ctrl.weight_vector.tolist(), None if lw is None else sorted(lw.items())))
    return out


_PLAIN = (str, int, float, bool, type(None))


def assert_plain(obj: Any, path: str = "state") -> None:
    """Every leaf is an exact built-in scalar (not a subclass such as ``np.float64``)."""
    if type(obj) in _PLAIN:
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            assert_plain(v, f"{path}[{i}]")
        return
    if type(obj) is dict:
        for k, v in obj.items():
            assert type(k) in (str, int), f"{path}: key {k!r} of type {type(k).__name__}"
            assert_plain(v, f"{path}[{k!r}]")
        return
    raise AssertionError(f"{path} is {type(obj).__module__}.{type(obj).__name__}, not plain "
                         f"Python ({obj!r:.80})")


def torch_round_trip(state: Any) -> Any:
    """``torch.save`` then ``torch.load(weights_only=True)``; asserts plain data first."""
    assert_plain(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    out = torch.load(buf, weights_only=True)
    assert json.dumps(out, sort_keys=True) == json.dumps(state, sort_keys=True)
    return out


def _observed(ctrl: Any) -> Any:
    """Give the controller a MixLogger (no file) so its state is checked too."""
    if getattr(ctrl, "observer", None) is None:
        ctrl.observer = MixLogger()
    return ctrl


def check_round_trip(make_stream: Callable[[], FakeStream], make: Make, loss_fn: LossFn,
                     n: int = 30, m: int = 30) -> list:
    """Assert exact resume; returns the reference trajectory of the last ``m`` steps."""
    stream = make_stream()
    ctrl = _observed(make(stream))
    _run(stream, ctrl, loss_fn, n)
    state = stream.state_dict()
    saved = torch_round_trip(state)  # plain data, loadable with weights_only=True
    assert json.loads(json.dumps(state)) == json.loads(json.dumps(saved))  # and JSON-able
    ref = _run(stream, ctrl, loss_fn, m)
    ref_log = copy.deepcopy(stream.log)

    stream2 = make_stream()
    ctrl2 = _observed(make(stream2))
    stream2.load_state_dict(saved)
    got = _run(stream2, ctrl2, loss_fn, m)
    assert got == ref, "resumed controller diverged from the uninterrupted run"
    assert stream2.log == ref_log, "weight logs differ after resume"
    assert ctrl2.step == ctrl.step
    for w, _ in ref:
        assert abs(sum(w) - 1) < 1e-9 and min(w) >= 0
    return ref


def const_losses(values: list[float]) -> LossFn:
    """Per-sequence loss = values[domain] + small deterministic noise."""
    v = torch.tensor(values, dtype=torch.float64)

    def fn(step: int, ids: torch.Tensor) -> dict:
        g = torch.Generator().manual_seed(step)
        return {"loss": v[ids] + 0.01 * torch.rand(len(ids), generator=g, dtype=torch.float64)}
    return fn


def assert_on_simplex(w: np.ndarray, floor: float = 0.0) -> None:
    w = np.asarray(w)
    assert np.all(np.isfinite(w))
    assert abs(w.sum() - 1) < 1e-9, w
    assert w.min() >= floor - 1e-12, (w, floor)
