"""Choosing a mixture under availability caps: ``min_r Σ_i exp(a_i + t_i·r)`` on the capped simplex.

The aggregated explicit law ``Σ_i s_i (c_i + k_i exp(t_i·r))`` with ``s, k >= 0`` is, up to a
constant, ``Σ_i exp(a_i + t_i·r)`` with ``a_i = log s_i + log k_i``: a sum of exponentials of
affine functions, hence convex in ``r``. The feasible set is
``{r : 0 <= r_j <= cap_j, Σ_j r_j = 1}`` (``cap_j`` = the largest share domain ``j``'s data can
supply, e.g. available tokens / training tokens).

* ``method="convex"``: spectral projected gradient with an exact Euclidean projection onto
  the capped simplex; the global optimum up to a KKT residual of 1e-10. (The DML authors enumerate a grid; Olmix/OP-Mix use cvxpy — same optimum.)
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
                            tol: float = 1e-10, max_iter: int = 10000) -> np.ndarray:
    """Minimise a smooth convex ``fun(x) -> (value, gradient)`` on the capped simplex.

    Spectral projected gradient (Birgin, Martínez & Raydan 2000: Barzilai-Borwein steps,
    non-monotone Armijo search over the last 10 values). Stops when the projected-gradient
    residual ``max|P(x - g) - x|`` is at most ``tol``; scale ``fun`` so its gradient is O(1).
    """
    n = caps.shape[0]
    x = project_capped_simplex(np.full(n, 1.0 / n) if x0 is None else x0, caps)
    f, g = fun(x)
    recent = [f]
    res = float(np.abs(project_capped_simplex(x - g, caps) - x).max())
    lam = 1.0 / max(res, 1e-12)
    for _ in range(max_iter):
        if res <= tol:
            break
        d = project_capped_simplex(x - lam * g, caps) - x
        gd = float(g @ d)
        f_ref, step = max(recent), 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if f_new <= f_ref + 1e-4 * step * gd or step < 1e-20:
                break
            step *= 0.5
        s_vec, y_vec = x_new - x, g_new - g
        sy = float(s_vec @ y_vec)
        lam = 1e30 if sy <= 0 else min(max(float(s_vec @ s_vec) / sy, 1e-30), 1e30)
        x, f, g = x_new, f_new, g_new
        recent = (recent + [f])[-10:]
        res = float(np.abs(project_capped_simplex(x - g, caps) - x).max())
    return project_capped_simplex(x, caps)  # exact feasibility despite rounding in x + step·d


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
    r0 = project_capped_simplex(np.full(t.shape[1], 1.0 / t.shape[1]), c)
    z0 = a + tt @ r0
    shift = float(np.max(z0) + np.log(np.exp(z0 - np.max(z0)).sum()))  # f(r0) = 1 after scaling

    def fun(r: np.ndarray) -> tuple[float, np.ndarray]:
        e = np.exp(a - shift + tt @ r)
        return float(e.sum()), tt.T @ e

    return minimize_capped_simplex(fun, c)
