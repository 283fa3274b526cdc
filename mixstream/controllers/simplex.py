"""Small pure helpers for weight vectors on the probability simplex."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def as_vector(weights: Mapping[str, float] | Sequence[float] | np.ndarray,
              domains: Sequence[str], what: str = "weights") -> np.ndarray:
    """``weights`` (mapping by domain name, or a sequence in domain order) -> float64 vector.

    Not normalised; raises ``ValueError`` on unknown/missing names, wrong length, NaN,
    infinite or negative values.
    """
    names = list(domains)
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(names))
        missing = [d for d in names if d not in weights]
        if unknown or missing:
            raise ValueError(f"{what}: unknown domain(s) {unknown}, missing domain(s) {missing}; "
                             f"expected exactly {names}")
        v = np.array([float(weights[d]) for d in names], dtype=np.float64)
    else:
        v = np.asarray(weights, dtype=np.float64).reshape(-1)
        if v.size != len(names):
            raise ValueError(f"{what}: got {v.size} values for {len(names)} domains {names}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what}: non-finite value in {v.tolist()} for domains {names}")
    if np.any(v < 0):
        raise ValueError(f"{what}: negative value in {v.tolist()} for domains {names}")
    return v


def normalise(v: np.ndarray, what: str = "weights") -> np.ndarray:
    """Divide by the sum; raises ``ValueError`` if the sum is not positive and finite."""
    s = float(np.sum(v))
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"{what}: cannot normalise {np.asarray(v).tolist()} (sum {s})")
    return np.asarray(v, dtype=np.float64) / s


def clip_min_probability(p: np.ndarray, min_prob: float) -> np.ndarray:
    """ADO's floor: rescale so that after flooring at ``min_prob`` the total is 1.

    Same arithmetic as ``clip_min_probability`` in yidingjiang/ado ``src/data_selectors/ado.py``.
    """
    if min_prob * len(p) > 1:
        raise ValueError(f"min probability {min_prob} x {len(p)} domains exceeds 1; lower it")
    total_deficit = max(min_prob * len(p) - float(p.sum()), 0.0)
    scaled = p * ((1 - total_deficit) / p.sum())
    clipped = np.maximum(scaled, min_prob)
    return clipped / clipped.sum()


def to_dict(v: np.ndarray, domains: Sequence[str]) -> dict[str, float]:
    return {d: float(x) for d, x in zip(domains, v, strict=True)}
