"""Static mixtures: fixed weights, proportional to size, temperature sampling, UniMax."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np

from ..feedback import StepFeedback
from ..plan.weights import WeightsLike
from .base import Controller, Observer, Requirements, StreamLike
from .simplex import as_vector, scale_to_unit_sum
from .sizes import domain_sizes, proportional_weights, temperature_weights, unimax_weights


class StaticMixture(Controller):
    """A fixed mixture, pushed to the stream once at construction.

    Use the constructors :meth:`proportional`, :meth:`temperature` and :meth:`unimax` for
    size-based rules (sizes from ``stream.domain_stats()``). ``feedback`` still works and only
    feeds the observer (realised counts, loss EMA), which makes a static run comparable in logs.
    ``weights=None`` keeps the stream's current weights.
    """

    requires = Requirements(domain_sizes=True)
    domain_state: ClassVar[Mapping[str, str | float] | None] = {}

    def __init__(self, stream: StreamLike, weights: WeightsLike | None = None, *,
                 observer: Observer | None = None,
                 validate: Callable[[], Mapping[str, float]] | None = None,
                 rule: str = "fixed") -> None:
        super().__init__(stream, observer=observer, validate=validate)
        self.rule = rule
        if weights is not None:
            self._push(scale_to_unit_sum(as_vector(weights, self.domains), "static weights"))

    @classmethod
    def proportional(cls, stream: StreamLike, *, unit: str = "auto",
                     observer: Observer | None = None) -> StaticMixture:
        """Weights proportional to domain size (``unit``: tokens, bytes, documents, samples)."""
        sizes, u = domain_sizes(stream.domain_stats(), list(stream.domains), unit)
        return cls(stream, proportional_weights(sizes), observer=observer,
                   rule=f"proportional({u})")

    @classmethod
    def temperature(cls, stream: StreamLike, *, tau: float | None = None,
                    alpha: float | None = None, unit: str = "auto",
                    observer: Observer | None = None) -> StaticMixture:
        """Temperature sampling ``n_i^(1/tau)`` over domain sizes."""
        sizes, u = domain_sizes(stream.domain_stats(), list(stream.domains), unit)
        w = temperature_weights(sizes, tau=tau, alpha=alpha)
        return cls(stream, w, observer=observer, rule=f"temperature({u})")

    @classmethod
    def unimax(cls, stream: StreamLike, *, budget: float, max_epochs: float = 4.0,
               unit: str = "auto", observer: Observer | None = None) -> StaticMixture:
        """UniMax: uniform budget shares capped at ``max_epochs`` passes (``budget`` in ``unit``)."""
        sizes, u = domain_sizes(stream.domain_stats(), list(stream.domains), unit)
        w = unimax_weights(sizes, budget, max_epochs)
        return cls(stream, w, observer=observer, rule=f"unimax({u})")

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        return None

    def _state(self) -> dict:
        return {"rule": self.rule}

    def _load_state(self, state: Mapping) -> None:
        self.rule = str(state.get("rule", self.rule))
