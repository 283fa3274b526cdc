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

from collections.abc import Callable
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

    def value_and_grad(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        th = theta.detach().requires_grad_(True)
        f = _huber_per_start(model(th, x_tr), y_tr, delta).sum(dim=1)
        (g,) = torch.autograd.grad(f.sum(), th)
        f, g = f.detach(), g.detach()
        bad = ~torch.isfinite(f) | ~torch.isfinite(g).all(dim=1)
        f = torch.where(bad, torch.full_like(f, torch.inf), f)
        g = torch.where(bad[:, None], torch.zeros_like(g), g)
        return f, g

    @torch.no_grad()
    def value(theta: torch.Tensor) -> torch.Tensor:
        f = _huber_per_start(model(theta, x_tr), y_tr, delta).sum(dim=1)
        return torch.where(torch.isfinite(f), f, torch.full_like(f, torch.inf))

    @torch.no_grad()
    def selection(theta: torch.Tensor) -> torch.Tensor:
        if valid_split > 1:
            s = _huber_per_start(model(theta, x_va), y_va, delta).mean(dim=1)
        elif valid_split == 1:
            pred = model(theta, x_va)
            s = ((pred - y_va.expand_as(pred)) ** 2).reshape(pred.shape[0], -1).mean(dim=1)
        else:
            s = _huber_per_start(model(theta, x_tr), y_tr, delta).mean(dim=1)
        return torch.where(torch.isfinite(s), s, torch.full_like(s, torch.inf))

    theta = torch.from_numpy(inits.copy())
    n_starts, n_params = theta.shape
    m = history_size
    s_hist = torch.zeros(n_starts, m, n_params, dtype=torch.float64)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(n_starts, m, dtype=torch.float64)
    count = torch.zeros(n_starts, dtype=torch.long)  # valid pairs stored (<= m)
    head = torch.zeros(n_starts, dtype=torch.long)  # next slot of each ring buffer

    f, g = value_and_grad(theta)
    alive = torch.isfinite(f)  # starts that produced a finite loss stay candidates
    done = ~alive | (g.abs().amax(dim=1) <= tolerance_grad)  # converged (or dead) for good
    best_sel = torch.full((n_starts,), torch.inf, dtype=torch.float64)
    best_theta = theta.clone()

    def direction(idx: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """L-BFGS two-loop recursion for the starts ``idx`` (gradients ``g``)."""
        sh, yh, rh = s_hist[idx], y_hist[idx], rho[idx]
        cnt, hd = count[idx], head[idx]
        ar = torch.arange(idx.numel())
        q = g.clone()
        saved = []
        for k in range(m):  # newest to oldest
            j = (hd - 1 - k) % m
            ok = (k < cnt).to(torch.float64)
            sj, yj, rj = sh[ar, j], yh[ar, j], rh[ar, j] * ok
            a = rj * (sj * q).sum(dim=1)
            q = q - a[:, None] * yj
            saved.append((a, sj, yj, rj))
        newest = (hd - 1) % m
        sy = (sh[ar, newest] * yh[ar, newest]).sum(dim=1)
        yy = (yh[ar, newest] ** 2).sum(dim=1)
        gamma = torch.where(cnt > 0, sy / yy.clamp_min(1e-300), torch.ones_like(sy))
        r = q * gamma[:, None]
        for a, sj, yj, rj in reversed(saved):  # oldest to newest
            b = rj * (yj * r).sum(dim=1)
            r = r + sj * (a - b)[:, None]
        scale = torch.clamp(1.0 / g.abs().sum(dim=1).clamp_min(1e-300), max=1.0)
        return torch.where((cnt == 0)[:, None], -g * scale[:, None], -r)

    for _ in range(max_step):
        for _ in range(max_iter):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            th, fa, ga = theta[idx], f[idx], g[idx]
            d = direction(idx, ga)
            gtd = (ga * d).sum(dim=1)
            uphill = gtd >= 0  # numerical breakdown: restart from steepest descent
            if bool(uphill.any()):
                count[idx[uphill]] = 0
                d = torch.where(uphill[:, None], -ga, d)
                gtd = (ga * d).sum(dim=1)
            step = torch.ones(idx.numel(), dtype=torch.float64)
            pending = torch.ones(idx.numel(), dtype=torch.bool)
            new_th, new_f = th.clone(), fa.clone()
            for _ in range(max_line_search):  # Armijo backtracking on the pending starts
                pi = pending.nonzero().squeeze(1)
                cand = th[pi] + step[pi, None] * d[pi]
                fc = value(cand)
                ok = fc <= fa[pi] + 1e-4 * step[pi] * gtd[pi]
                new_th[pi[ok]], new_f[pi[ok]] = cand[ok], fc[ok]
                pending[pi[ok]] = False
                if not bool(pending.any()):
                    break
                step[pi[~ok]] *= 0.5
            done[idx[pending]] = True  # no decrease along a descent direction: converged
            moved = ~pending
            mi = idx[moved]
            if mi.numel() == 0:
                continue
            f2, g2 = value_and_grad(new_th[moved])
            s_vec, y_vec = new_th[moved] - theta[mi], g2 - g[mi]
            sy = (s_vec * y_vec).sum(dim=1)
            store = sy > 1e-10
            si, slot = mi[store], head[mi[store]]
            s_hist[si, slot], y_hist[si, slot] = s_vec[store], y_vec[store]
            rho[si, slot] = 1.0 / sy[store]
            head[si] = (slot + 1) % m
            count[si] = (count[si] + 1).clamp(max=m)
            small = ((f[mi] - f2).abs() < tolerance_change) | (
                (step[moved, None] * d[moved]).abs().amax(dim=1) <= tolerance_change)
            theta[mi], f[mi], g[mi] = new_th[moved], f2, g2
            done[mi] = small | (g2.abs().amax(dim=1) <= tolerance_grad)
        sel = selection(theta)
        better = alive & (sel <= best_sel)
        best_sel = torch.where(better, sel, best_sel)
        best_theta = torch.where(better[:, None], theta, best_theta)
        if bool(done.all()):
            break  # later outer steps would score the same parameters again

    if not bool(torch.isfinite(best_sel).any()):
        raise ValueError("no start produced a finite loss; check the data and the initial values")
    winner = int(torch.argmin(best_sel))  # first minimum wins ties
    params = best_theta[winner : winner + 1]
    train = float(value(params)[0])
    return FitResult(params=params[0].numpy().copy(), selection_loss=float(best_sel[winner]),
                     train_loss=train, start=winner)
