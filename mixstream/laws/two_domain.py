"""The two-domain mixing law ``L(r) = c + exp(k·r + b)`` and the authors' way of fitting it.

``r`` is the proportion of the validation domain's own training domain (Data Mixing Laws,
``mix_2_domains.ipynb`` and ``continue_training.ipynb``). Fitting follows the notebook:

1. ``c`` maximises ``|corr(r, log(L - c))|`` over ``numpy.linspace(0, min L, 1000)`` (first
   maximum wins; ``c = min L`` gives ``log 0`` and is never chosen);
2. ``(k, b)`` minimise ``huber(L - c, exp(k·r + b), delta=0.02, sum)`` with L-BFGS from the
   11 x 11 grid ``k ∈ linspace(-2.4, -1.6, 11)``, ``b ∈ linspace(-1.0, -0.1, 11)``,
   ``max_step = 100`` outer steps (see :mod:`mixstream.laws.huber_lbfgs`).

The law is the explicit per-domain law with two training domains written in a fixed gauge;
:meth:`TwoDomainLaw.from_explicit` converts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mixstream.laws.huber_lbfgs import fit_huber_lbfgs

K_GRID = np.linspace(-2.4, -1.6, 11)
B_GRID = np.linspace(-1.0, -0.1, 11)


@dataclass(frozen=True)
class TwoDomainLaw:
    """``L(r) = c + exp(k·r + b)``; ``loss`` is the fit's Huber mean (the notebook's "min loss")."""

    c: float
    k: float
    b: float
    loss: float = float("nan")

    def predict(self, r: np.ndarray | float) -> np.ndarray:
        return self.c + np.exp(self.k * np.asarray(r, dtype=np.float64) + self.b)

    def critical_proportion(self, target_loss: float) -> float:
        """The proportion ``r`` at which the predicted loss equals ``target_loss``.

        Continual pre-training (paper §4.3): with ``r`` the share of the original domain and
        ``target_loss`` its loss before continual training, any ``r`` on the decreasing side
        of this value keeps the loss at or below ``target_loss``. Raises ``ValueError`` when
        the law never reaches ``target_loss`` (it is at or below the asymptote ``c``).
        """
        if not math.isfinite(target_loss) or target_loss <= self.c:
            raise ValueError(f"target loss {target_loss} is not above the law's asymptote "
                             f"c={self.c:.6g}; no proportion reaches it")
        if self.k == 0:
            raise ValueError("k = 0: the law does not depend on the proportion")
        return (math.log(target_loss - self.c) - self.b) / self.k

    @classmethod
    def from_explicit(cls, log_c: float, log_k: float, t_own: float, t_other: float,
                      loss: float = float("nan")) -> TwoDomainLaw:
        """Gauge-fix ``exp(log_c) + exp(log_k + t_own·r + t_other·(1-r))`` to this form."""
        return cls(c=math.exp(log_c), k=t_own - t_other, b=log_k + t_other, loss=loss)


def best_offset(r: np.ndarray, losses: np.ndarray, n_grid: int = 1000) -> float:
    """The notebook's choice of ``c``: maximise ``|corr(r, log(L - c))|`` on a grid."""
    best_c, max_corr = 0.0, 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        for c in np.linspace(0.0, float(np.min(losses)), n_grid):
            corr = abs(np.corrcoef(r, np.log(losses - c))[0, 1])
            if corr > max_corr:  # NaN compares False, as in the notebook
                max_corr, best_c = corr, float(c)
    return best_c


def _exp_law(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.exp(params[:, :1] * x[None, :] + params[:, 1:2])


def fit_two_domain(r: np.ndarray, losses: np.ndarray, *, delta: float = 0.02,
                   max_step: int = 100) -> TwoDomainLaw:
    """Fit ``L(r) = c + exp(k·r + b)`` exactly as ``mix_2_domains.ipynb`` does."""
    r = np.asarray(r, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if r.ndim != 1 or r.shape != losses.shape or r.size < 3:
        raise ValueError(f"need matching 1-D proportions and losses with >= 3 points, got shapes "
                         f"{r.shape} and {losses.shape}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(losses))):
        raise ValueError("proportions and losses must be finite")
    if np.any(losses <= 0):
        raise ValueError("losses must be positive")
    if np.ptp(r) == 0:
        raise ValueError("all proportions are equal; the law needs at least two distinct values")
    c = best_offset(r, losses)
    inits = np.array([[k, b] for k in K_GRID for b in B_GRID])
    res = fit_huber_lbfgs(_exp_law, r, losses - c, inits, delta=delta, max_step=max_step)
    return TwoDomainLaw(c=c, k=float(res.params[0]), b=float(res.params[1]),
                        loss=res.selection_loss)
