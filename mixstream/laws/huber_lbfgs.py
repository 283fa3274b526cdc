"""Multi-start Huber + L-BFGS curve fitting, batched over the starts.

This is the fitting procedure of the Data Mixing Laws code (``law.py``, ``fit_scaling_laws``):
for every initial parameter vector, minimise ``huber_loss(y, f(x; θ), delta, reduction="sum")``
on the training rows with L-BFGS (history 10, at most 20 iterations per outer step) for
``max_step`` outer steps; after every outer step score θ with the *selection loss* and keep the
best θ seen; finally keep the start with the lowest selection loss. The selection loss is the
Huber mean on the last ``valid_split`` rows when ``valid_split > 1``, their MSE when it is 1,
and the Huber mean on the training rows when it is 0.

Deliberate deviations from the authors' code (documented, none changes the objective):

* All starts run at once as one batch of independent L-BFGS problems (each start keeps its own
  curvature history, step length and convergence state) instead of one process per start.
* The line search is Armijo backtracking from the unit quasi-Newton step (the first step of a
  start is scaled by ``min(1, 1/|g|_1)`` as in ``torch.optim.LBFGS``) instead of torch's
  strong-Wolfe search started at ``lr=0.01``; curvature pairs with ``sᵀy <= 1e-10`` are skipped.
* Arithmetic is float64 (the authors used float32), so fits converge further.
* A start stops for good once it converges (gradient <= ``tolerance_grad``, change <=
  ``tolerance_change``, or no Armijo decrease in ``max_line_search`` halvings); torch's LBFGS
  would retry it at every later outer step and make no further progress.
* Ties between starts keep the first start (the authors' process pool returned them in
  completion order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``model(params [S, P], x [N, ...]) -> predictions [S, N, ...]`` (shape of ``y`` per start)."""


@dataclass(frozen=True)
class FitResult:
    """Best parameters over all starts, with the losses used to choose them."""

    params: np.ndarray  # [P]
    selection_loss: float  # the authors' "min loss"
    train_loss: float  # Huber sum on the training rows at ``params``
    start: int  # index of the winning initial vector


def _check_inputs(x: np.ndarray, y: np.ndarray, inits: np.ndarray, valid_split: int) -> None:
    if inits.ndim != 2 or inits.shape[0] == 0:
        raise ValueError(f"inits must be a non-empty [starts, params] array, got shape {inits.shape}")
    if not np.all(np.isfinite(inits)):
        raise ValueError("inits contain NaN or infinite values")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite values")
    if valid_split < 0 or valid_split >= y.shape[0]:
        raise ValueError(f"valid_split={valid_split} must be in [0, {y.shape[0] - 1}] for "
                         f"{y.shape[0]} rows (at least one training row is needed)")


def _huber_per_start(pred: torch.Tensor, y: torch.Tensor, delta: float) -> torch.Tensor:
    loss = F.huber_loss(pred, y.expand_as(pred), reduction="none", delta=delta)
    return loss.reshape(loss.shape[0], -1)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block.

    The fits are many small tensor ops; on a shared 2-core machine torch's intra-op threads
    made a 5-domain fit 11x slower (33 s vs 2.9 s measured) instead of faster.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_huber_lbfgs(
    model: ModelFn,
    x: np.ndarray,
    y: np.ndarray,
    inits: np.ndarray,
    *,
    delta: float,
    max_step: int,
    valid_split: int = 0,
    max_iter: int = 20,
    history_size: int = 10,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    max_line_search: int = 30,
) -> FitResult:
    """Fit ``model`` to ``(x, y)`` from every row of ``inits``; return the best start.

    ``x`` and ``y`` are split along their first axis: the last ``valid_split`` rows are held
    out for selecting the parameters (see the module docstring).
    """
    with one_thread():
        return _fit(model, x, y, inits, delta=delta, max_step=max_step, valid_split=valid_split,
                    max_iter=max_iter, history_size=history_size, tolerance_grad=tolerance_grad,
                    tolerance_change=tolerance_change, max_line_search=max_line_search)


def _fit(model: ModelFn, x: np.ndarray, y: np.ndarray, inits: np.ndarray, *, delta: float,
         max_step: int, valid_split: int, max_iter: int, history_size: int,
         tolerance_grad: float, tolerance_change: float, max_line_search: int) -> FitResult:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inits = np.asarray(inits, dtype=np.float64)
    _check_inputs(x, y, inits, valid_split)
    if delta <= 0 or max_step < 1 or max_iter < 1 or history_size < 1:
        raise ValueError(f"need delta > 0, max_step >= 1, max_iter >= 1, history_size >= 1; got "
                         f"{delta}, {max_step}, {max_iter}, {history_size}")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n_train = y.shape[0] - valid_split
    x_tr, y_tr, x_va, y_va = xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:]

    # torch evaluates the model (and its gradient by autograd); the L-BFGS bookkeeping is numpy
    def value_and_grad(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        th = torch.from_numpy(theta).requires_grad_(True)
        fv = _huber_per_start(model(th, x_tr), y_tr, delta).sum(dim=1)
        (gv,) = torch.autograd.grad(fv.sum(), th)
        f, g = fv.detach().numpy().copy(), gv.numpy().copy()
        bad = ~np.isfinite(f) | ~np.isfinite(g).all(axis=1)
        f[bad], g[bad] = np.inf, 0.0
        return f, g

    def value(theta: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            f = _huber_per_start(model(torch.from_numpy(theta), x_tr), y_tr, delta).sum(dim=1)
        out = f.numpy().copy()
        out[~np.isfinite(out)] = np.inf
        return out

    def selection(theta: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pred = model(torch.from_numpy(theta), x_va if valid_split else x_tr)
            if valid_split > 1:
                sv = _huber_per_start(pred, y_va, delta).mean(dim=1)
            elif valid_split == 1:
                sv = ((pred - y_va.expand_as(pred)) ** 2).reshape(pred.shape[0], -1).mean(dim=1)
            else:
                sv = _huber_per_start(pred, y_tr, delta).mean(dim=1)
        out = sv.numpy().copy()
        out[~np.isfinite(out)] = np.inf
        return out

    theta = inits.copy()
    n_starts, n_params = theta.shape
    m = history_size
    s_hist = np.zeros((n_starts, m, n_params))
    y_hist = np.zeros((n_starts, m, n_params))
    rho = np.zeros((n_starts, m))
    count = np.zeros(n_starts, dtype=np.int64)  # valid pairs stored (<= m)
    head = np.zeros(n_starts, dtype=np.int64)  # next slot of each ring buffer

    f, g = value_and_grad(theta)
    alive = np.isfinite(f)  # starts that produced a finite loss stay candidates
    done = ~alive | (np.abs(g).max(axis=1) <= tolerance_grad)  # converged (or dead) for good
    best_sel = np.full(n_starts, np.inf)
    best_theta = theta.copy()
    lags = np.arange(m)

    def direction(idx: np.ndarray, g: np.ndarray) -> np.ndarray:
        """L-BFGS two-loop recursion for the starts ``idx`` (gradients ``g``)."""
        cnt = count[idx]
        order = (head[idx][:, None] - 1 - lags[None, :]) % m  # newest first
        rows = idx[:, None]
        sh, yh = s_hist[rows, order], y_hist[rows, order]  # [a, m, P]
        rh = rho[rows, order] * (lags[None, :] < cnt[:, None])
        q = g.copy()
        alpha = np.zeros_like(rh)
        for k in range(m):
            alpha[:, k] = rh[:, k] * np.einsum("ap,ap->a", sh[:, k], q)
            q -= alpha[:, k, None] * yh[:, k]
        sy = np.einsum("ap,ap->a", sh[:, 0], yh[:, 0])
        yy = np.einsum("ap,ap->a", yh[:, 0], yh[:, 0])
        gamma = np.where(cnt > 0, sy / np.maximum(yy, 1e-300), 1.0)
        r = q * gamma[:, None]
        for k in range(m - 1, -1, -1):
            beta = rh[:, k] * np.einsum("ap,ap->a", yh[:, k], r)
            r += sh[:, k] * (alpha[:, k] - beta)[:, None]
        scale = np.minimum(1.0 / np.maximum(np.abs(g).sum(axis=1), 1e-300), 1.0)
        return np.where((cnt == 0)[:, None], -g * scale[:, None], -r)

    for _ in range(max_step):
        for _ in range(max_iter):
            idx = np.flatnonzero(~done)
            if idx.size == 0:
                break
            th, fa, ga = theta[idx], f[idx], g[idx]
            d = direction(idx, ga)
            gtd = np.einsum("ap,ap->a", ga, d)
            uphill = gtd >= 0  # numerical breakdown: restart from steepest descent
            if uphill.any():
                count[idx[uphill]] = 0
                d[uphill] = -ga[uphill]
                gtd = np.einsum("ap,ap->a", ga, d)
            step = np.ones(idx.size)
            pending = np.ones(idx.size, dtype=bool)
            new_th, new_f = th.copy(), fa.copy()
            for _ in range(max_line_search):  # Armijo backtracking on the pending starts
                pi = np.flatnonzero(pending)
                cand = th[pi] + step[pi, None] * d[pi]
                fc = value(cand)
                ok = fc <= fa[pi] + 1e-4 * step[pi] * gtd[pi]
                new_th[pi[ok]], new_f[pi[ok]] = cand[ok], fc[ok]
                pending[pi[ok]] = False
                if not pending.any():
                    break
                step[pi[~ok]] *= 0.5
            done[idx[pending]] = True  # no decrease along a descent direction: converged
            moved = ~pending
            mi = idx[moved]
            if mi.size == 0:
                continue
            f2, g2 = value_and_grad(new_th[moved])
            s_vec, y_vec = new_th[moved] - theta[mi], g2 - g[mi]
            sy = np.einsum("ap,ap->a", s_vec, y_vec)
            store = sy > 1e-10
            si, slot = mi[store], head[mi[store]]
            s_hist[si, slot], y_hist[si, slot] = s_vec[store], y_vec[store]
            rho[si, slot] = 1.0 / sy[store]
            head[si] = (slot + 1) % m
            count[si] = np.minimum(count[si] + 1, m)
            small = (np.abs(f[mi] - f2) < tolerance_change) | (
                np.abs(step[moved, None] * d[moved]).max(axis=1) <= tolerance_change)
            theta[mi], f[mi], g[mi] = new_th[moved], f2, g2
            done[mi] = small | (np.abs(g2).max(axis=1) <= tolerance_grad)
        sel = selection(theta)
        better = alive & (sel <= best_sel)
        best_sel[better] = sel[better]
        best_theta[better] = theta[better]
        if done.all():
            break  # later outer steps would score the same parameters again

    if not np.isfinite(best_sel).any():
        raise ValueError("no start produced a finite loss; check the data and the initial values")
    winner = int(np.argmin(best_sel))  # first minimum wins ties
    params = best_theta[winner : winner + 1].copy()
    return FitResult(params=params[0], selection_loss=float(best_sel[winner]),
                     train_loss=float(value(params)[0]), start=winner)
