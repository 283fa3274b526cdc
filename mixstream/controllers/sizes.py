"""Static mixture rules from domain sizes: proportional, temperature, UniMax (pure functions).

docs/methods/static.md. Sizes come from ``stream.domain_stats()`` (:func:`domain_sizes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

UNITS = ("tokens", "bytes", "documents", "samples")


def domain_sizes(stats: Mapping[str, Mapping[str, int | None]], domains: Sequence[str],
                 unit: str = "auto") -> tuple[np.ndarray, str]:
    """Per-domain sizes in ``unit`` from ``stream.domain_stats()``; returns (sizes, unit used).

    ``unit="auto"`` takes the first of tokens, bytes, documents, samples known for every domain.
    """
    if unit != "auto" and unit not in UNITS:
        raise ValueError(f"unknown size unit {unit!r}; use one of {UNITS} or 'auto'")
    missing = [d for d in domains if d not in stats]
    if missing:
        raise ValueError(f"domain_stats() has no entry for domain(s) {missing}")
    candidates = UNITS if unit == "auto" else (unit,)
    for u in candidates:
        vals = [stats[d].get(u) for d in domains]
        if all(v is not None for v in vals):
            sizes = np.asarray(vals, dtype=np.float64)
            if np.any(sizes < 0) or not np.all(np.isfinite(sizes)):
                raise ValueError(f"domain sizes ({u}) must be finite and >= 0, got {sizes.tolist()}")
            if sizes.sum() <= 0:
                raise ValueError(f"all domain sizes ({u}) are zero: {dict(zip(domains, vals, strict=True))}")
            return sizes, u
        if unit != "auto":
            unknown = [d for d, v in zip(domains, vals, strict=True) if v is None]
            raise ValueError(f"size unit {unit!r} is unknown for domain(s) {unknown}; build the "
                             f"shards with token counts or choose another unit ({UNITS})")
    raise ValueError(f"no size unit is known for every domain in {list(domains)}")


def _check_sizes(sizes: np.ndarray) -> np.ndarray:
    s = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if s.size == 0 or np.any(s < 0) or not np.all(np.isfinite(s)) or s.sum() <= 0:
        raise ValueError(f"sizes must be finite, >= 0 and not all zero, got {s.tolist()}")
    return s


def proportional_weights(sizes: np.ndarray) -> np.ndarray:
    """Natural mixture: ``n_i / sum(n)``."""
    s = _check_sizes(sizes)
    return s / s.sum()


def temperature_weights(sizes: np.ndarray, *, tau: float | None = None,
                        alpha: float | None = None) -> np.ndarray:
    """Temperature sampling ``q_i ∝ n_i^(1/tau)`` (= ``p_i^alpha``, ``alpha = 1/tau``).

    ``alpha=1`` is proportional, ``alpha=0`` uniform over non-empty domains (XLM-R/mT5 use
    ``alpha=0.3``). Empty domains always get weight 0.
    """
    if (tau is None) == (alpha is None):
        raise ValueError("give exactly one of tau (temperature > 0) or alpha = 1/tau (>= 0)")
    if tau is not None:
        if not tau > 0 or not np.isfinite(tau):
            raise ValueError(f"temperature tau must be > 0 and finite, got {tau}")
        a = 1.0 / tau
    else:
        assert alpha is not None
        if not alpha >= 0 or not np.isfinite(alpha):
            raise ValueError(f"alpha must be >= 0 and finite, got {alpha}")
        a = float(alpha)
    s = _check_sizes(sizes)
    p = s / s.sum()
    q = np.where(p > 0, np.power(p, a, where=p > 0, out=np.zeros_like(p)), 0.0)
    return q / q.sum()


def unimax_budgets(sizes: np.ndarray, budget: float, max_epochs: float) -> np.ndarray:
    """UniMax per-domain budgets (Chung et al. 2023): uniform share, capped at N epochs.

    Domains are visited from smallest to largest; each gets ``min(remaining / left, N * n_i)``.
    """
    s = _check_sizes(sizes)
    if not budget > 0 or not np.isfinite(budget):
        raise ValueError(f"UniMax budget must be > 0 (same unit as the sizes), got {budget}")
    if not max_epochs > 0:
        raise ValueError(f"UniMax max_epochs must be > 0, got {max_epochs}")
    order = np.argsort(s, kind="stable")
    out = np.zeros_like(s)
    remaining = float(budget)
    for idx, i in enumerate(order):
        share = remaining / (len(s) - idx)
        out[i] = min(share, max_epochs * s[i])
        remaining -= out[i]
    return out


def unimax_weights(sizes: np.ndarray, budget: float, max_epochs: float) -> np.ndarray:
    """UniMax sampling weights ``b_i / sum(b)``.

    Equals the paper's ``b_i / B`` whenever the budget can be spent; when even ``max_epochs``
    of every domain is below ``B`` the budgets are renormalised (a sampler needs sum 1).
    """
    b = unimax_budgets(sizes, budget, max_epochs)
    return b / b.sum()
