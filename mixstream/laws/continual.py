"""Continual pre-training: the critical proportion of the original data (Data Mixing Laws §4.3).

When a trained model continues on a mixture of its original domain and new data, the loss on
the original domain rises unless enough original data is mixed in. Along the line of mixtures
``r(p) = p·e_orig + (1 - p)·q`` (``q`` = the new data's own mixture, zero on the original
domain) the explicit law is ``L(p) = c + k·exp(t·q + p·(t_orig - t·q))`` — one exponential in
``p`` — so the proportion at which the predicted loss equals a target (the loss before
continual training) has a closed form. For two domains this is
:meth:`TwoDomainLaw.critical_proportion`.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np


class ExplicitLawParams(Protocol):
    """The explicit law's parameters (:class:`~mixstream.laws.mixture.MixtureLawParams` has
    them; a protocol, so that this module sits below ``mixture``, which calls it)."""

    @property
    def log_c(self) -> np.ndarray: ...  # [K]
    @property
    def log_k(self) -> np.ndarray: ...  # [K]
    @property
    def t(self) -> np.ndarray: ...  # [K, M]


def critical_proportion(params: ExplicitLawParams, val_index: int, original_index: int,
                        target_loss: float, new_mixture: np.ndarray | None = None) -> float:
    """Proportion ``p`` of the original domain at which ``L_val(r(p)) = target_loss``.

    ``new_mixture`` is ``q`` over all training domains (default: uniform over the domains other
    than the original). The result is not clipped: ``p <= 0`` means every mixture on the line
    keeps the loss at or below the target (when the loss falls with ``p``), ``p > 1`` that none
    does. Raises ``ValueError`` when the target is at or below the law's asymptote ``c`` or the
    law is flat along the line.
    """
    m = params.t.shape[1]
    if not (0 <= val_index < params.t.shape[0] and 0 <= original_index < m):
        raise ValueError(f"indices out of range: val_index {val_index} of {params.t.shape[0]}, "
                         f"original_index {original_index} of {m}")
    if new_mixture is None:
        q = np.full(m, 1.0 / (m - 1))
        q[original_index] = 0.0
    else:
        q = np.asarray(new_mixture, dtype=np.float64)
        if q.shape != (m,) or np.any(q < 0) or abs(q.sum() - 1) > 1e-9 or q[original_index] != 0:
            raise ValueError("new_mixture must be a distribution over the training domains with "
                             "0 on the original domain")
    c = math.exp(params.log_c[val_index])
    if not math.isfinite(target_loss) or target_loss <= c:
        raise ValueError(f"target loss {target_loss} is not above the law's asymptote c={c:.6g}; "
                         f"no proportion reaches it")
    t = params.t[val_index]
    base = params.log_k[val_index] + float(t @ q)
    slope = float(t[original_index] - t @ q)
    if slope == 0:
        raise ValueError("the law does not change along this line of mixtures")
    return (math.log(target_loss - c) - base) / slope
