"""Choosing a mixture under availability caps: ``min_r Σ_i exp(a_i + t_i·r)`` on the capped simplex.

The aggregated explicit law ``Σ_i s_i (c_i + k_i exp(t_i·r))`` with ``s, k >= 0`` is, up to a
constant, ``Σ_i exp(a_i + t_i·r)`` with ``a_i = log s_i + log k_i``: a sum of exponentials of
affine functions, hence convex in ``r``. The feasible set is
``{r : 0 <= r_j <= cap_j, Σ_j r_j = 1}`` (``cap_j`` = the largest share domain ``j``'s data can
supply, e.g. available tokens / training tokens).

* ``method="convex"``: accelerated projected gradient (FISTA with backtracking and adaptive
  restart) with an exact Euclidean projection onto the capped simplex; the global optimum up
  to ``tol``. (The DML authors enumerate a grid; Olmix/OP-Mix use cvxpy — same optimum.)
* ``method="grid"``: the authors' candidate set (``pipeline/find_opt.py dfs``): every domain
  but the last takes ``grid·floor(cap/grid)·2^-s`` (values below ``grid`` become 0), the last
  domain takes the remainder, which must lie in ``[0, cap_last]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np


def check_caps(caps: np.ndarray | None, n: int) -> np.ndarray:
    """Validated caps (default 1 everywhere); raises when no mixture can satisfy them."""
    if caps is None:
        return np.ones(n)
    c = np.asarray(caps, dtype=np.float64).ravel()
    if c.shape[0] != n:
        raise ValueError(f"got {c.shape[0]} caps for {n} training domains")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"caps must be finite and >= 0 (0 excludes a domain), got {c.tolist()}")
    c = np.minimum(c, 1.0)
    if c.sum() < 1 - 1e-12:
        raise ValueError(f"caps sum to {c.sum():.6g} < 1, so no mixture fits under them; raise a "
                         f"cap or add a domain")
    return c


def project_capped_simplex(v: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` onto ``{0 <= x <= caps, Σ x = 1}`` (``Σ caps >= 1``).

    ``x = clip(v - τ, 0, caps)`` with ``τ`` solving ``Σ x = 1``; the sum is piecewise linear
    and non-increasing in ``τ`` with breakpoints ``v_j`` and ``v_j - cap_j``, so ``τ`` is
    found exactly by sorting them.
    """
    v = np.asarray(v, dtype=np.float64)
    taus = np.unique(np.concatenate([v, v - caps]))  # sorted ascending
    sums = np.clip(v[None, :] - taus[:, None], 0.0, caps[None, :]).sum(axis=1)
    # sums is non-increasing; find the segment [taus[i], taus[i+1]] where it crosses 1
    i = int(np.searchsorted(-sums, -1.0, side="right")) - 1
    if i < 0:
        tau = float(taus[0])
    elif i >= taus.size - 1:
        tau = float(taus[-1])
    else:
        s0, s1 = sums[i], sums[i + 1]
        tau = float(taus[i]) if s0 == s1 else \
            float(taus[i] + (s0 - 1.0) * (taus[i + 1] - taus[i]) / (s0 - s1))
    x = np.clip(v - tau, 0.0, caps)
    for _ in range(3):  # cancellation in v - tau when |v| is large: fix the sum on free entries
        free = (x > 0) & (x < caps)
        residual = 1.0 - x.sum()
        if not free.any() or residual == 0.0:
            break
        x[free] += residual / free.sum()
        x = np.clip(x, 0.0, caps)
    return x


def minimize_capped_simplex(fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
                            caps: np.ndarray, x0: np.ndarray | None = None, *,
                            tol: float = 1e-10, max_iter: int = 20000) -> np.ndarray:
    """Minimise a smooth convex ``fun(x) -> (value, gradient)`` on the capped simplex.

    Stops when an accepted step moves no coordinate by more than ``tol``.
    """
    n = caps.shape[0]
    x = project_capped_simplex(np.full(n, 1.0 / n) if x0 is None else x0, caps)
    fx, _ = fun(x)
    y, t, lip = x.copy(), 1.0, 1.0
    for _ in range(max_iter):
        fy, gy = fun(y)
        while True:
            x_new = project_capped_simplex(y - gy / lip, caps)
            diff = x_new - y
            f_new, _ = fun(x_new)
            if f_new <= fy + gy @ diff + 0.5 * lip * (diff @ diff) + 1e-13 * abs(fy):
                break
            lip *= 2.0
        if f_new > fx:  # momentum overshot: restart from x (a plain step cannot increase f)
            if t == 1.0:
                break  # even the plain step does not improve: converged to rounding
            y, t = x.copy(), 1.0
            continue
        step = float(np.abs(x_new - x).max())
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, fx, t = x_new, f_new, t_new
        if step <= tol:
            break
    return x


def halving_grid(caps: np.ndarray, grid: float = 1 / 16) -> np.ndarray:
    """The authors' candidate mixtures ``[G, M]`` (see the module docstring)."""
    if not 0 < grid <= 1:
        raise ValueError(f"grid step must be in (0, 1], got {grid}")
    values = []
    for cap in caps[:-1]:
        top = grid * int(cap / grid + 1e-9)
        vals = {0.0 if top * 2.0 ** -s < grid else top * 2.0 ** -s
                for s in range(0, 1 + int(cap / grid + 1e-9))}
        values.append(sorted(vals | {0.0}))
    out = []
    for combo in itertools.product(*values):
        last = 1.0 - sum(combo)
        if -1e-12 <= last <= caps[-1] + 1e-12:
            out.append((*combo, max(last, 0.0)))
    if not out:
        raise ValueError(f"the halving grid (step {grid}) has no mixture within caps "
                         f"{caps.tolist()}; use method='convex'")
    return np.array(out)


def propose_mixture(log_a: np.ndarray, t: np.ndarray, *, caps: np.ndarray | None = None,
                    method: str = "convex", grid: float = 1 / 16) -> np.ndarray:
    """Minimise ``Σ_i exp(log_a_i + t_i·r)`` over capped mixtures ``r`` (``t: [K, M]``)."""
    t = np.asarray(t, dtype=np.float64)
    log_a = np.asarray(log_a, dtype=np.float64)
    if t.ndim != 2 or log_a.shape != (t.shape[0],):
        raise ValueError(f"need t [K, M] and log_a [K], got {t.shape} and {log_a.shape}")
    c = check_caps(caps, t.shape[1])
    keep = np.isfinite(log_a)  # log 0 = -inf: validation domains with weight 0
    a, tt = log_a[keep], t[keep]
    if method == "grid":
        cand = halving_grid(c, grid)
        z = a[None, :] + cand @ tt.T
        return cand[int(np.argmin(np.exp(z).sum(axis=1)))].copy()
    if method != "convex":
        raise ValueError(f"unknown method {method!r}; use 'convex' or 'grid'")
    shift = float(np.max(a))  # scale the objective so its values are O(1)

    def fun(r: np.ndarray) -> tuple[float, np.ndarray]:
        e = np.exp(a - shift + tt @ r)
        return float(e.sum()), tt.T @ e

    return minimize_capped_simplex(fun, c)
