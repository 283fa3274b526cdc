"""Shared state-dict round-trip harness for controllers.

Runs N feedback steps, saves ``stream.state_dict()`` (which holds the controller state via
``attach``), continues M steps; then builds a fresh stream + controller, loads the saved state
and runs the same M steps. Weights, loss weights and the stream's weight log must be identical.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from controller_fakes import FakeStream

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


def check_round_trip(make_stream: Callable[[], FakeStream], make: Make, loss_fn: LossFn,
                     n: int = 30, m: int = 30) -> list:
    """Assert exact resume; returns the reference trajectory of the last ``m`` steps."""
    stream = make_stream()
    ctrl = make(stream)
    _run(stream, ctrl, loss_fn, n)
    saved = json.loads(json.dumps(stream.state_dict()))  # must be plain, JSON-able data
    ref = _run(stream, ctrl, loss_fn, m)
    ref_log = copy.deepcopy(stream.log)

    stream2 = make_stream()
    ctrl2 = make(stream2)
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
