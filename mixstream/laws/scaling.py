"""Training-step and model-size scaling laws, ``L(x) = c + (x0 / x)^α``, with a shared ``α``.

Parametrised as ``exp(log_c) + exp(α·(log_x0 - log x))`` (``power_law_share_alpha`` in
yegcjs/mixinglaws ``pipeline/utils.py``). ``C`` curves (columns of ``y``) are fitted jointly:
each has its own ``log_c`` and ``log_x0``, all share ``α``. Settings of ``pipeline/run.sh``:

* step law (``steplaw.py --tie_alpha valid``): ``x`` = tokens = step x tokens per step,
  ``α`` tied across the validation domains of one run; Huber ``delta=0.05``,
  ``valid_split=5``, ``max_step=20``; starts ``log_x0 ∈ linspace(15, 23, 11)``,
  ``α ∈ linspace(0.65, 0.9, 10)``, 50 draws each.
* size law (``sizelaw.py --tie_alpha all``): ``x`` = non-embedding parameters, ``α`` tied
  across every run and domain; ``delta=0.08``, ``valid_split=1``, ``max_step=100``; starts
  ``log_x0 ∈ linspace(15, 25, 20)``, ``α ∈ linspace(0.3, 0.8, 10)``, 50 draws each.

In every draw ``log_c_j = min_n log y_nj + 1 + U(0, 1)`` and ``log_x0_j = grid + U(-½, ½)``
per curve — as in the authors' code, ``c`` starts *above* the smallest observed loss
([QUIRK], kept). Rows of ``x``/``y`` must be in increasing ``x`` so that the held-out rows
are the largest steps or sizes. Draws use ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mixstream.laws.huber_lbfgs import fit_huber_lbfgs

TOKENS_PER_STEP = 4096 * 256  # the authors' batch: 4096 sequences x 256 tokens


def shared_alpha_power_law(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Batched shared-α law: ``params [S, 2C+1]``, ``x [N, C]`` -> ``[S, N, C]``."""
    c = (params.shape[1] - 1) // 2
    log_c, log_x0, alpha = params[:, :c], params[:, c:2 * c], params[:, 2 * c:]
    return torch.exp(log_c)[:, None, :] + torch.exp(
        alpha[:, :, None] * (log_x0[:, None, :] - torch.log(x)[None, :, :]))


@dataclass(frozen=True)
class PowerLaw:
    """Fitted curves ``c_j + (x0_j / x)^α``; ``selection_loss`` as in :mod:`huber_lbfgs`."""

    log_c: np.ndarray  # [C]
    log_x0: np.ndarray  # [C]
    alpha: float
    selection_loss: float = float("nan")

    def predict(self, x: float | np.ndarray) -> np.ndarray:
        """Losses ``[C]`` at scalar ``x``, or ``[N, C]`` at ``x [N]``."""
        xx = np.asarray(x, dtype=np.float64)
        out = np.exp(self.log_c) + np.exp(self.alpha * (self.log_x0 - np.log(xx)[..., None]))
        return out


@dataclass(frozen=True)
class PowerLawSettings:
    """Fit settings; :data:`STEP_LAW` and :data:`SIZE_LAW` are the authors'."""

    delta: float
    valid_split: int
    max_step: int
    log_x0_grid: Sequence[float]
    alpha_grid: Sequence[float]
    n_draws: int = 50

    def with_draws(self, n_draws: int) -> PowerLawSettings:
        return PowerLawSettings(self.delta, self.valid_split, self.max_step, self.log_x0_grid,
                                self.alpha_grid, n_draws)


STEP_LAW = PowerLawSettings(0.05, 5, 20, tuple(np.linspace(15, 23, 11)),
                            tuple(np.linspace(0.65, 0.9, 10)))
SIZE_LAW = PowerLawSettings(0.08, 1, 100, tuple(np.linspace(15, 25, 20)),
                            tuple(np.linspace(0.3, 0.8, 10)))


def power_law_inits(y: np.ndarray, settings: PowerLawSettings, seed: int = 0) -> np.ndarray:
    """The authors' start set for curves ``y [N, C]`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    min_log = np.log(np.min(y, axis=0))
    c = y.shape[1]
    rows = []
    for log_x0 in settings.log_x0_grid:
        for alpha in settings.alpha_grid:
            for _ in range(settings.n_draws):
                rows.append(np.concatenate([min_log + 1 + rng.random(c),
                                            log_x0 + rng.random(c) - 0.5, [alpha]]))
    return np.array(rows)


def fit_shared_alpha_power_law(x: np.ndarray, y: np.ndarray, settings: PowerLawSettings,
                  seed: int = 0) -> PowerLaw:
    """Fit shared-α power laws to curves ``y [N, C]`` at ``x [N]`` or ``[N, C]`` (increasing)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = np.repeat(x[:, None], y.shape[1], axis=1)
    if x.shape != y.shape:
        raise ValueError(f"x {x.shape} and y {y.shape} do not match")
    if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("power-law fits need finite x > 0 and finite losses > 0")
    if np.any(np.diff(x, axis=0) <= 0):
        raise ValueError("x must increase along the rows (held-out rows are the largest x)")
    n_train = y.shape[0] - settings.valid_split
    if n_train < 3:  # 2 parameters per curve + the shared exponent
        raise ValueError(f"{y.shape[0]} points leave {n_train} for fitting after holding out "
                         f"{settings.valid_split}; a power law needs >= 3: give more steps/sizes "
                         f"or lower valid_split")
    res = fit_huber_lbfgs(shared_alpha_power_law, x, y, power_law_inits(y, settings, seed),
                          delta=settings.delta, max_step=settings.max_step,
                          valid_split=settings.valid_split)
    c = y.shape[1]
    return PowerLaw(log_c=res.params[:c].copy(), log_x0=res.params[c:2 * c].copy(),
                    alpha=float(res.params[-1]), selection_loss=res.selection_loss)
