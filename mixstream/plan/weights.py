"""Mixture weights: validation and the append-only weight log.

A weight-log entry says: from global sample ``from_sample`` on, domains are mixed with
``weights``. Entries are appended with increasing ``from_sample``; appending at the same index
as the last entry replaces it (several calls within one step keep the last one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

WeightsLike = Mapping[str, float] | Sequence[float] | np.ndarray


def normalize_weights(weights: WeightsLike, domains: Sequence[str]) -> np.ndarray:
    """Validate ``weights`` against ``domains`` and return them as a float64 vector summing to 1.

    Zero weights are allowed (the domain is switched off); NaN, infinite, negative, all-zero,
    unknown or missing domains raise ``ValueError`` naming the problem.
    """
    names = list(domains)
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise ValueError(f"unknown domain(s) {unknown} in weights; known domains: {names}")
        missing = [k for k in names if k not in weights]
        if missing:
            raise ValueError(f"weights missing for domain(s) {missing}; give every domain a weight "
                             f"(0 switches a domain off)")
        values = [weights[k] for k in names]
    else:
        values = list(np.asarray(weights, dtype=np.float64).ravel())
        if len(values) != len(names):
            raise ValueError(f"got {len(values)} weights for {len(names)} domains {names}")
    out = np.empty(len(names), dtype=np.float64)
    for i, (name, v) in enumerate(zip(names, values)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"weight for domain {name!r} is not a number: {v!r}") from None
        if math.isnan(f) or math.isinf(f):
            raise ValueError(f"weight for domain {name!r} is {f}; weights must be finite")
        if f < 0:
            raise ValueError(f"weight for domain {name!r} is negative ({f}); use 0 to switch it off")
        out[i] = f
    with np.errstate(over="ignore"):
        total = out.sum()
    if total <= 0:
        raise ValueError(f"all weights are zero for domains {names}; at least one must be positive")
    if not math.isfinite(total):  # 1e308 + 1e308: each finite, the sum is not
        out = out / out.max()
        total = out.sum()
    return out / total


@dataclass(frozen=True)
class LogEntry:
    from_sample: int
    weights: np.ndarray  # float64, normalised

    def to_json(self) -> list:
        return [int(self.from_sample), [float(x) for x in self.weights]]

    @staticmethod
    def from_json(item: list) -> LogEntry:
        return LogEntry(int(item[0]), np.asarray(item[1], dtype=np.float64))


class WeightLog:
    """The append-only list of weight entries; entry 0 starts at sample 0."""

    def __init__(self, initial: np.ndarray):
        self.entries: list[LogEntry] = [LogEntry(0, np.asarray(initial, dtype=np.float64))]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def latest(self) -> LogEntry:
        return self.entries[-1]

    def append(self, from_sample: int, weights: np.ndarray) -> bool:
        """Add an entry; returns True if it replaced the last one (same ``from_sample``)."""
        last = self.entries[-1]
        if from_sample < last.from_sample:
            raise ValueError(f"weight-log entries must not go back in time: from_sample "
                             f"{from_sample} < {last.from_sample} of the last entry")
        entry = LogEntry(int(from_sample), np.asarray(weights, dtype=np.float64))
        if from_sample == last.from_sample:
            self.entries[-1] = entry
            return True
        self.entries.append(entry)
        return False

    def to_json(self) -> list:
        return [e.to_json() for e in self.entries]

    @staticmethod
    def from_json(items: list) -> WeightLog:
        log = WeightLog(np.asarray(items[0][1], dtype=np.float64))
        log.entries = [LogEntry.from_json(x) for x in items]
        return log
