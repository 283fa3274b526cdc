"""Mixture schedules (curricula): piecewise-constant or linear between mixtures.

Stages are ``(point, weights)`` pairs with increasing points, measured ``by`` optimizer step
(feedback calls), global samples consumed (``stream.consumed_samples``), or tokens seen (loss
tokens reported to :meth:`feedback`, summed over ranks, or ``tokens_per_sample`` times the
samples consumed). Before the first point the first mixture applies, after the last point the
last one. ``interpolate="linear"`` blends neighbouring mixtures linearly; to keep the stream's
weight log short, a new blend is pushed at most every ``every`` steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..feedback import StepFeedback
from ..plan.weights import WeightsLike
from .base import Controller, Observer, Requirements, StreamLike
from .simplex import as_vector, scale_to_unit_sum

BY = ("step", "samples", "tokens")


def schedule_weights(points: np.ndarray, mixtures: np.ndarray, x: float,
                     interpolate: str) -> np.ndarray:
    """Mixture at position ``x`` (pure). ``mixtures[i]`` applies from ``points[i]``."""
    if x <= points[0]:
        return mixtures[0].copy()
    i = int(np.searchsorted(points, x, side="right")) - 1
    if interpolate == "constant" or i >= len(points) - 1:
        return mixtures[i].copy()
    f = (x - points[i]) / (points[i + 1] - points[i])
    w = (1 - f) * mixtures[i] + f * mixtures[i + 1]
    return w / w.sum()


class Schedule(Controller):
    """Piecewise-constant or linearly interpolated mixture schedule by step, samples or tokens.

    ``Schedule(stream, [(0, {"web": 1, "code": 0}), (1000, {"web": .5, "code": .5})])``
    switches at step 1000 (``interpolate="linear"`` ramps from step 0 to 1000). Call
    ``feedback(batch["domain"])`` (losses optional) once per step.
    """

    requires = Requirements()

    def __init__(self, stream: StreamLike, stages: Sequence[tuple[float, WeightsLike]], *,
                 by: str = "step", interpolate: str = "constant", every: int = 1,
                 tokens_per_sample: int | None = None, observer: Observer | None = None) -> None:
        if by not in BY:
            raise ValueError(f"schedule 'by' must be one of {BY}, got {by!r}")
        if interpolate not in ("constant", "linear"):
            raise ValueError(f"interpolate must be 'constant' or 'linear', got {interpolate!r}")
        if not stages:
            raise ValueError("a schedule needs at least one (point, weights) stage")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        super().__init__(stream, observer=observer)
        pts = np.asarray([float(p) for p, _ in stages])
        if np.any(np.diff(pts) <= 0) or pts[0] < 0:
            raise ValueError(f"schedule points must be >= 0 and strictly increasing, got "
                             f"{pts.tolist()}")
        self.points = pts
        self.mixtures = np.stack([scale_to_unit_sum(as_vector(w, self.domains, f"stage {i} weights"),
                                            f"stage {i} weights")
                                  for i, (_, w) in enumerate(stages)])
        self.by, self.interpolate, self.every = by, interpolate, int(every)
        self.tokens_per_sample = tokens_per_sample
        self.tokens_seen = 0.0
        self._last_push_step = 0
        self._push(schedule_weights(self.points, self.mixtures, 0.0, interpolate))

    def position(self) -> float:
        if self.by == "step":
            return float(self.step)
        if self.by == "samples" or self.tokens_per_sample is not None:
            n = float(self.stream.consumed_samples)
            return n if self.by == "samples" else n * float(self.tokens_per_sample or 0)
        return self.tokens_seen

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        if self.by == "tokens" and self.tokens_per_sample is None:
            if not fb.has_tokens and fb.counts.sum() > 0:
                raise ValueError("a token schedule needs token counts: pass feedback(domain, "
                                 "tokens=...) or per-token losses with mask=..., or set "
                                 "tokens_per_sample")
            self.tokens_seen += float(fb.tokens.sum())
        w = schedule_weights(self.points, self.mixtures, self.position(), self.interpolate)
        if np.array_equal(w, self._weights):
            return None
        crossing = self.interpolate == "constant" or np.array_equal(
            w, self.mixtures[0]) or np.array_equal(w, self.mixtures[-1])
        if not crossing and self.step - self._last_push_step < self.every:
            return None
        self._last_push_step = self.step
        return w

    def _state(self) -> dict:
        return {"tokens_seen": self.tokens_seen, "last_push_step": self._last_push_step}

    def _load_state(self, state: Mapping) -> None:
        self.tokens_seen = float(state["tokens_seen"])
        self._last_push_step = int(state["last_push_step"])
