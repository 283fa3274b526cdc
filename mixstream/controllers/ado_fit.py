"""ADO's per-domain power-law fit ``L(n) = exp(e) + exp(a) / n^alpha`` (pure functions).

Objective as in yidingjiang/ado ``src/data_selectors/ado.py`` (``loss_fn``): Huber
(δ = 1e-3) between ``log L`` and ``logsumexp(a - alpha log n, e)``, plus the penalties
``max(alpha - 0.8, 0) - min(alpha, 0.001) + max(a - 6.5, 0) - min(e - 0.5, 0)``, minimised
by L-BFGS from the 8 x 8 x 8 grid a ∈ {-2..5}, e ∈ {-2, -1.5, .., 1.5}, alpha ∈ {0, .., 0.7};
the best end point is kept.

Deviation (speed, documented): the released code runs L-BFGS (jaxopt, vmapped) from all 512
grid points; here the objective is evaluated on the whole grid and scipy's BFGS runs from the
``n_starts`` best grid points (``n_starts=None`` runs all 512, as released). With 3 parameters
L-BFGS (history 10 >= 3) and BFGS are the same method; scipy's L-BFGS-B was 30x slower here
because its BLAS threads fight the trainer's threads for the CPU.
"""

from __future__ import annotations

import numpy as np

HUBER_DELTA = 1e-3


def init_grid() -> np.ndarray:
    """The released 512-point initialisation grid, rows (a, e, alpha)."""
    a = np.arange(-2, 6, 1.0)
    e = np.arange(-2, 2, 0.5)
    al = np.arange(0, 0.8, 0.1)
    x, y, z = np.meshgrid(a, e, al, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def free_alpha_power_law(params: np.ndarray, n: np.ndarray | float) -> np.ndarray:
    """``exp(e) + exp(a) / n^alpha`` for params (a, e, alpha) (rows broadcast over ``n``)."""
    a, e, al = np.asarray(params, dtype=np.float64).T
    return np.exp(e) + np.exp(a) / np.power(n, al)


def _penalty(a: np.ndarray, e: np.ndarray, al: np.ndarray) -> np.ndarray:
    return (np.maximum(al - 0.8, 0) - np.minimum(al, 0.001) + np.maximum(a - 6.5, 0)
            - np.minimum(e - 0.5, 0))


def objective(params: np.ndarray, log_n: np.ndarray, log_l: np.ndarray,
              delta: float = HUBER_DELTA) -> np.ndarray:
    """Objective for a batch of parameter rows ``[G, 3]`` (vectorised), returns ``[G]``."""
    p = np.atleast_2d(params)
    a, e, al = p[:, 0:1], p[:, 1:2], p[:, 2:3]
    pred = np.logaddexp(a - al * log_n[None, :], e)
    r = np.abs(log_l[None, :] - pred)
    hub = np.where(r > delta, delta * (r - 0.5 * delta), 0.5 * r * r).sum(1)
    return hub + _penalty(p[:, 0], p[:, 1], p[:, 2])


def objective_and_grad(theta: np.ndarray, log_n: np.ndarray, log_l: np.ndarray,
                       delta: float = HUBER_DELTA) -> tuple[float, np.ndarray]:
    a, e, al = (float(x) for x in theta)
    u = a - al * log_n
    pred = np.logaddexp(u, e)
    res = log_l - pred
    r = np.abs(res)
    val = float(np.where(r > delta, delta * (r - 0.5 * delta), 0.5 * r * r).sum())
    psi = np.clip(res, -delta, delta)  # d huber / d res
    su = np.exp(u - pred)              # d pred / d a
    sv = np.exp(e - pred)              # d pred / d e
    g = np.array([-(psi * su).sum(), -(psi * sv).sum(), (psi * su * log_n).sum()])
    val += float(_penalty(np.array(a), np.array(e), np.array(al)))
    g[2] += (1.0 if al > 0.8 else 0.0) - (1.0 if al < 0.001 else 0.0)
    g[0] += 1.0 if a > 6.5 else 0.0
    g[1] -= 1.0 if e < 0.5 else 0.0
    return val, g


def fit_free_alpha_power_law(n: np.ndarray, loss: np.ndarray, *, n_starts: int | None = 8,
                  maxiter: int = 200, tol: float = 1e-5) -> np.ndarray:
    """Fit (a, e, alpha) to losses ``loss`` at sample counts ``n`` (both 1-D, positive)."""
    from scipy.optimize import minimize  # scipy is needed only for ADO

    n = np.asarray(n, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if n.shape != loss.shape or n.ndim != 1 or n.size == 0:
        raise ValueError(f"fit_free_alpha_power_law needs equal-length 1-D n and loss, got {n.shape}, "
                         f"{loss.shape}")
    if np.any(n <= 0) or np.any(loss <= 0):
        raise ValueError("fit_free_alpha_power_law needs positive sample counts and positive losses")
    log_n, log_l = np.log(n), np.log(loss)
    grid = init_grid()
    if n_starts is not None and n_starts < len(grid):
        vals = objective(grid, log_n, log_l)
        grid = grid[np.argsort(vals, kind="stable")[:n_starts]]
    best, best_val = np.full(3, np.nan), np.inf
    for x0 in grid:
        res = minimize(objective_and_grad, x0, args=(log_n, log_l), jac=True, method="BFGS",
                       options={"maxiter": maxiter, "gtol": tol})
        if np.isfinite(res.fun) and res.fun < best_val:
            best, best_val = np.asarray(res.x, dtype=np.float64), float(res.fun)
    return best
