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


def scale_to_unit_sum(v: np.ndarray, what: str = "weights") -> np.ndarray:
    """``v / sum(v)``; raises ``ValueError`` if the sum is not positive and finite.

    Unlike :func:`mixstream.plan.weights.normalize_weights` (which validates user input against
    domain names), this takes an already-validated vector in domain order.
    """
    s = float(np.sum(v))
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"{what}: cannot scale {np.asarray(v).tolist()} to sum 1 (sum {s})")
    return np.asarray(v, dtype=np.float64) / s


def clip_min_probability(p: np.ndarray, min_prob: float) -> np.ndarray:
    """Floor a distribution at ``min_prob``, scaling the other entries so the total stays 1.

    ADO's ``clip_min_probability`` (yidingjiang/ado) clips at ``min_prob`` and renormalises,
    which leaves the floored entries slightly *below* ``min_prob``; here the floor is exact
    (domains under it are pinned at ``min_prob``, the rest share ``1 - pinned`` in proportion).
    """
    k = len(p)
    if min_prob * k > 1:
        raise ValueError(f"min probability {min_prob} x {k} domains exceeds 1; lower it")
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    fixed = np.zeros(k, dtype=bool)
    q = p.copy()
    for _ in range(k + 1):
        free = ~fixed
        rem = 1.0 - min_prob * fixed.sum()
        mass = p[free].sum()
        q[free] = p[free] * rem / mass if mass > 0 else rem / free.sum()
        q[fixed] = min_prob
        low = free & (q < min_prob)
        if not low.any():
            break
        fixed |= low
    return q


def to_dict(v: np.ndarray, domains: Sequence[str]) -> dict[str, float]:
    return {d: float(x) for d, x in zip(domains, v, strict=True)}
