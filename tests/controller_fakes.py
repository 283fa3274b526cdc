"""A stand-in for ``MixStream`` with exactly the members controllers use.

``lag`` simulates DataLoader prefetching: a weight change applies from
``consumed_samples + lag`` (the first sample the loader cannot have prefetched yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mixstream.controllers.simplex import as_vector, scale_to_unit_sum


class FakeStream:
    def __init__(self, domains: Sequence[str], weights: Sequence[float] | None = None, *,
                 sizes: Mapping[str, Mapping[str, int | None]] | None = None, lag: int = 0,
                 batch_size: int = 16, seed: int = 0) -> None:
        self.domains = list(domains)
        w = np.ones(len(self.domains)) if weights is None else as_vector(weights, self.domains)
        self.log: list[tuple[int, list[float]]] = [(0, scale_to_unit_sum(w).tolist())]
        self._sizes = dict(sizes) if sizes else {
            d: {"samples": 1000, "tokens": None, "bytes": None, "documents": None}
            for d in self.domains}
        self.lag = lag
        self.batch_size = batch_size
        self.seed = seed
        self.consumed_batches = 0
        self.consumed_samples = 0
        self.attached: list[Any] = []

    # -- the stream API ------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.domains, self.log[-1][1], strict=True))

    def set_weights(self, w: Mapping[str, float] | Sequence[float]) -> int:
        vec = scale_to_unit_sum(as_vector(w, self.domains))  # raises ValueError like the real stream
        start = self.consumed_samples + self.lag
        if self.log[-1][0] == start:
            self.log[-1] = (start, vec.tolist())
        else:
            self.log.append((start, vec.tolist()))
        return start

    def domain_stats(self) -> dict[str, dict]:
        return {d: dict(v) for d, v in self._sizes.items()}

    def attach(self, obj: Any) -> None:
        self.attached.append(obj)

    def state_dict(self) -> dict:
        return {"log": [(s, list(w)) for s, w in self.log],
                "consumed_batches": self.consumed_batches,
                "consumed_samples": self.consumed_samples,
                "attached": [o.state_dict() for o in self.attached]}

    def load_state_dict(self, state: Mapping) -> None:
        self.log = [(int(s), list(w)) for s, w in state["log"]]
        self.consumed_batches = int(state["consumed_batches"])
        self.consumed_samples = int(state["consumed_samples"])
        if len(state["attached"]) != len(self.attached):
            raise ValueError("attach the same controllers before loading")
        for obj, st in zip(self.attached, state["attached"], strict=True):
            obj.load_state_dict(st)

    # -- test helpers --------------------------------------------------------
    def weights_at(self, sample: int) -> np.ndarray:
        w = self.log[0][1]
        for s, ww in self.log:
            if s <= sample:
                w = ww
        return np.asarray(w)

    def next_batch(self) -> torch.Tensor:
        """Domain ids of the next batch (deterministic in seed and position), then consume it."""
        rng = np.random.default_rng([self.seed, self.consumed_batches])
        ids = [int(rng.choice(len(self.domains), p=self.weights_at(self.consumed_samples + i)))
               for i in range(self.batch_size)]
        self.consumed_batches += 1
        self.consumed_samples += self.batch_size
        return torch.tensor(ids, dtype=torch.long)
