"""A diagnostic instance: shards, evaluation sets, the target, the sweep and the known answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .model import MicroConfig

Mixture = dict[str, float]
# A schedule: [(start_step, mixture), ...]; the first entry starts at step 0.
Schedule = list[tuple[int, Mixture]]


@dataclass
class Problem:
    """Everything a run needs; built once per diagnostic by :mod:`.diagnostics`.

    ``test`` / ``dev``: evaluation sets (``[n, L+1]`` int64 rows), disjoint samples; ``target``
    weights them into the scalar that is optimised (dev, by controllers that use a target) and
    reported (test). Dev sets are never training domains' shards and never the test rows.
    """

    name: str
    title: str
    domains: list[str]
    shard_dirs: dict[str, str]
    tokens: dict[str, int]                 # training tokens per domain (proportional baseline)
    test: dict[str, torch.Tensor]
    dev: dict[str, torch.Tensor]
    target: dict[str, float]               # eval-set name -> weight (sums to 1)
    model: MicroConfig
    steps: int
    batch: int
    lr: float
    sweep: list[tuple[str, Schedule]]      # (label, schedule) static mixtures for the oracle
    stat_name: str                         # what the weight statistic measures
    stat: Callable[[np.ndarray, list[str]], float]  # (weights [steps, K], domains) -> value
    answer: str                            # the right answer, in words
    answer_check: Callable[[float, float], bool]  # (method stat, oracle stat) -> right side?
    predictions: dict[str, tuple[bool, str]] = field(default_factory=dict)  # method -> (succeeds?, why)
    init_state: Mapping[str, dict[str, torch.Tensor]] | None = None  # continual: seed -> state
    start_weights: Mixture | None = None    # continual: the mixture before the new domain
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def K(self) -> int:
        return len(self.domains)

    def uniform(self) -> Mixture:
        return {d: 1.0 / self.K for d in self.domains}

    def proportional(self) -> Mixture:
        tot = sum(self.tokens.values())
        return {d: self.tokens[d] / tot for d in self.domains}

    def dev_rows(self, total: int | None = None) -> torch.Tensor:
        """Dev rows in the target's proportions (FastMix's target batch, OP-Mix's mixed slot);
        ``total`` rows (default: as many as one set has)."""
        n = total or min(len(r) for r in self.dev.values())
        parts = [self.dev[name][: max(1, min(len(self.dev[name]), round(w * n)))]
                 for name, w in self.target.items()]
        return torch.cat(parts)

    def target_loss(self, per_set: Mapping[str, float]) -> float:
        return float(sum(w * per_set[n] for n, w in self.target.items()))


def schedule_of(mix: Mixture | Sequence[tuple[int, Mixture]]) -> Schedule:
    return [(0, dict(mix))] if isinstance(mix, Mapping) else [(int(s), dict(m)) for s, m in mix]
