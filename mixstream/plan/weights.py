"""Mixture weights: validation and the weight log.

A weight-log entry says: from global sample ``from_sample`` on, domains are mixed with
``weights``. Entries are kept in order of ``from_sample``; a new one lands where no reader has
produced anything yet (the stream checks that), which may be before an entry scheduled further
ahead; one at the same sample replaces it (several calls within one step keep the last one).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

    def get_state(self) -> list:
        return [int(self.from_sample), [float(x) for x in self.weights]]


class WeightLog:
    """The append-only list of weight entries, and a digest of every entry ever appended.

    The digest lets ranks compare their logs at a checkpoint without sending them (a change made
    on one rank only is an error, not duplicated data); it covers entries already folded into the
    mixture state by :meth:`compact`, so it is carried in the checkpoint and continued on load.
    """

    def __init__(self, initial: np.ndarray, *, entries: list[LogEntry] | None = None,
                 digest: str | None = None):
        w0 = np.asarray(initial, dtype=np.float64)
        self.entries: list[LogEntry] = entries or [LogEntry(0, w0)]
        # a hash chain (each digest hashes the previous one and the entry), so a run resumed
        # from a checkpoint's digest continues exactly as the uninterrupted run does
        self._digest = digest if digest is not None else hashlib.sha256(w0.tobytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def latest(self) -> LogEntry:
        return self.entries[-1]

    @property
    def digest(self) -> str:
        return self._digest

    def add(self, from_sample: int, weights: np.ndarray) -> bool:
        """Add an entry in order of ``from_sample`` (the caller places it where nothing was
        produced yet, possibly before one scheduled further ahead); returns True if it replaced
        one at the same sample."""
        if from_sample < self.entries[0].from_sample:
            raise ValueError(f"weight-log entries must not go back in time: from_sample "
                             f"{from_sample} < {self.entries[0].from_sample} of the first entry")
        entry = LogEntry(int(from_sample), np.asarray(weights, dtype=np.float64))
        self._digest = hashlib.sha256(self._digest.encode() + np.int64(from_sample).tobytes()
                                      + entry.weights.tobytes()).hexdigest()
        i = bisect.bisect_left([e.from_sample for e in self.entries], from_sample)
        if i < len(self.entries) and self.entries[i].from_sample == from_sample:
            self.entries[i] = entry
            return True
        self.entries.insert(i, entry)
        return False

    def after(self, sample: int) -> list[tuple[int, np.ndarray]]:
        """``(from_sample, weights)`` of the entries starting after ``sample``."""
        return [(e.from_sample, e.weights) for e in self.entries if e.from_sample > sample]

    def compact(self, sample: int) -> None:
        """Drop entries superseded before ``sample`` (folded into the mixture state there)."""
        keep = max([i for i, e in enumerate(self.entries) if e.from_sample <= sample] + [0])
        self.entries = self.entries[keep:]

    def get_state(self) -> list:
        return [e.get_state() for e in self.entries]

    @staticmethod
    def from_state(items: Any, num_domains: int, *, digest: str | None = None) -> WeightLog:
        """A log from :meth:`get_state`'s list, validated (a checkpoint is untrusted input)."""
        if not isinstance(items, list) or not items:
            raise ValueError("MixStream checkpoint 'weight_log' is empty")
        entries = []
        last = -1
        for i, item in enumerate(items):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(f"MixStream checkpoint weight_log[{i}] is not [from_sample, "
                                 f"weights]")
            f = item[0]
            if isinstance(f, bool) or not isinstance(f, int) or f < last:
                raise ValueError(f"MixStream checkpoint weight_log[{i}] starts at {f!r}; entries "
                                 f"must be non-decreasing integers")
            w = float_list(item[1], num_domains, f"weight_log[{i}]")
            if (w < 0).any() or not w.sum() > 0:
                raise ValueError(f"MixStream checkpoint weight_log[{i}] has invalid weights")
            entries.append(LogEntry(int(f), w))
            last = f
        return WeightLog(entries[0].weights, entries=entries, digest=digest)


def float_list(value: Any, n: int, key: str) -> np.ndarray:
    """``value`` as ``n`` finite float64s, or a ValueError naming the checkpoint ``key``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"MixStream checkpoint {key!r} is not a list of numbers") from None
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ValueError(f"MixStream checkpoint {key!r} must be {n} finite numbers")
    return arr
