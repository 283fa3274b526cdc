"""OP-Mix's per-domain log-linear law and KL-regularised proposer (docs/methods/opmix.md, steps 5-6).

Following michahu/on-policy-mix ``pipeline/olmix_fit.py``:

* per evaluation domain ``i``: ``L_i(x) = exp(c_i) + exp(t_i · x)`` on component coordinates
  ``x`` (simplex), fitted by Huber (δ = 0.02, sum) + L-BFGS from 10 × 30 starts
  (``c ∈ linspace(-2, 1.5, 10)``, ``t_own ~ -U(0, 1)``, other ``t ~ U(0, 0.1)``, seed 42);
* proposal: ``min_x (1/n) Σ_i exp(t_i · x) + λ KL(E x ‖ q)`` on the simplex, ``λ = 0.05``,
  ``E`` expands the collapsed "old" coordinate into leaf domains, ``q`` floored at 1e-12.

Deviations: the fit reuses :func:`mixstream.laws.huber_lbfgs.fit_huber_lbfgs` (batched starts,
Armijo line search; see there) with ``max_step`` default 30 instead of 100 (the fits converge
well before on OP-Mix's ~12-point tables); the convex program is solved with the spectral
projected-gradient solver of :mod:`mixstream.laws.propose` instead of cvxpy/ECOS (same optimum,
no solver dependency).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def loglinear_law(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``exp(c) + exp(x · t)`` for params ``[S, 1 + M]`` and ``x [N, M]`` → ``[S, N]``."""
    return torch.exp(params[:, :1]) + torch.exp(params[:, 1:] @ x.T)


@dataclass(frozen=True)
class LogLinearLaw:
    c: float
    t: np.ndarray
    loss: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.c) + np.exp(np.atleast_2d(x) @ self.t)


def law_inits(m: int, own: int | None, seed: int = 42, n_c: int = 10, n_t: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.linspace(-2, 1.5, n_c):
        for _ in range(n_t):
            t = rng.uniform(0, 0.1, size=m)
            if own is not None:
                t[own] = -rng.uniform(0, 1)
            rows.append(np.concatenate([[c], t]))
    return np.asarray(rows)


def fit_loglinear(x: np.ndarray, y: np.ndarray, own: int | None = None, *, delta: float = 0.02,
                  max_step: int = 30, seed: int = 42) -> LogLinearLaw:
    """Fit ``L(x) = exp(c) + exp(t · x)`` to ``(x [N, M], y [N])``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    from ..laws.huber_lbfgs import fit_huber_lbfgs  # the law layer loads when a fit runs

    res = fit_huber_lbfgs(loglinear_law, x, y, law_inits(x.shape[1], own, seed), delta=delta,
                          max_step=max_step)
    return LogLinearLaw(float(res.params[0]), res.params[1:].copy(), res.selection_loss)


def propose_kl(t: np.ndarray, expand: np.ndarray, prior: np.ndarray,
               kl_reg: float = 0.05, weights: np.ndarray | None = None) -> np.ndarray:
    """``argmin_x Σ_i w_i exp(t_i·x) + λ KL(E x ‖ q)`` over the simplex (``t [n, M]``,
    ``E [leaves, M]``, ``q [leaves]``, ``w`` the evaluation weights, default ``1/n`` — the
    released mean); returns ``x [M]``."""
    t = np.asarray(t, np.float64)
    e = np.asarray(expand, np.float64)
    q = np.maximum(np.asarray(prior, np.float64), 0)
    q = np.maximum(q / q.sum(), 1e-12)
    n, m = t.shape
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, np.float64) / np.sum(
        weights)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        ex = np.exp(t @ x)
        p = np.maximum(e @ x, 1e-12)
        f = float(w @ ex) + kl_reg * float(p @ np.log(p / q))
        g = t.T @ (w * ex) + kl_reg * e.T @ (np.log(p / q) + 1)
        return f, g

    from ..laws.propose import minimize_capped_simplex

    return minimize_capped_simplex(fun, np.ones(m), tol=1e-9)
