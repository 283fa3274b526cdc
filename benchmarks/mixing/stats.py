"""Paired-seed statistics: means with t-based 95 % CIs, paired differences, bootstrap ratios."""

from __future__ import annotations

import numpy as np
from scipy import stats as st


def mean_ci(x: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval (0 for one value)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size < 2:
        return float(a.mean()), 0.0
    return float(a.mean()), float(st.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))


def frac_oracle(method: np.ndarray, uniform: np.ndarray, oracle: np.ndarray,
                n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Fraction of the oracle's gain over uniform, ``mean(u - m) / mean(u - o)``, with a paired
    bootstrap 95 % interval over seeds (the same resampled seeds in numerator and denominator)."""
    m, u, o = (np.asarray(v, dtype=np.float64) for v in (method, uniform, oracle))
    den = float(np.mean(u - o))
    point = float(np.mean(u - m)) / den if den != 0 else float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(m), size=(n_boot, len(m)))
    num_b = (u[idx] - m[idx]).mean(1)
    den_b = (u[idx] - o[idx]).mean(1)
    ok = den_b > 0
    if not ok.any():
        return point, float("nan"), float("nan")
    r = num_b[ok] / den_b[ok]
    return point, float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))
