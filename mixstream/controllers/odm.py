"""ODM — Online Data Mixing (Albalak et al. 2023, arXiv 2312.02406); docs/methods/odm.md.

An EXP3-style bandit over domains with a smoothed exponentiated-loss reward and an
ε-uniform floor. Implements the path of the released code used for the published 1B runs
(``SmoothedMeanWeightUpdater.group_update`` in alon-albalak/online-data-mixing,
``megatron/data/data_sampling_utils.py``), every step::

    eps_t   = min(1/K, sqrt(ln K / (K t)))              t = global step (warm-up included)
    R_i    <- a R_i + (1 - a) exp(L_i)                  only for domains present in the step
    pi_i    = (1 - K eps_t) R_i / sum_j R_j + eps_t

``L_i`` is the domain's mean training loss in the step. Released code: losses are means over
single-domain micro-batches (token means); here the per-domain mean is token-weighted over the
domain's sequences (identical for packed, fixed-length sequences). Absent domains keep ``R_i``
(released behaviour). During ``warmup`` steps (``t <= warmup``) the weights stay at the
initial ones and ``R`` is not updated (``requires_update(t) = t > warmup``). Default
smoothing ``a = 0.5`` as in the published script (class default 0.9). Not implemented: the
``update`` (single-domain reward) and ``Exp3WeightUpdater`` variants of the same file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ..feedback import StepFeedback
from .base import Controller, Observer, Requirements, StreamLike


def odm_epsilon(step: int, num_domains: int) -> float:
    """ε_t = min(1/K, sqrt(ln K / (K t))); 1/K for t < 1 or K = 1."""
    k = num_domains
    if step < 1 or k < 2:
        return 1.0 / k
    return min(1.0 / k, math.sqrt(math.log(k) / (k * step)))


def odm_weights(reward: np.ndarray, eps: float) -> np.ndarray:
    """π = (1 - K ε) R / ΣR + ε  (R ≥ 0 with a positive sum)."""
    k = len(reward)
    return (1 - k * eps) * reward / reward.sum() + eps


class ODM(Controller):
    """Online Data Mixing; ``warmup`` steps on the initial mixture, then updates every step."""

    requires = Requirements(train_losses=True, loss_weighting="token")
    domain_state: ClassVar[Mapping[str, str | float] | None] = {"reward": "mean"}

    def __init__(self, stream: StreamLike, *, smoothing: float = 0.5, warmup: int = 2000,
                 update_every: int = 1, observer: Observer | None = None) -> None:
        if not 0 <= smoothing < 1:
            raise ValueError(f"ODM smoothing must be in [0, 1), got {smoothing}")
        if warmup < 0 or update_every < 1:
            raise ValueError(f"ODM needs warmup >= 0 and update_every >= 1, got {warmup}, "
                             f"{update_every}")
        super().__init__(stream, observer=observer)
        self.smoothing = float(smoothing)
        self.warmup = int(warmup)
        self.update_every = int(update_every)
        self.reward = np.zeros(self.K)
        self.eps = 1.0 / self.K

    @property
    def floor(self) -> float:
        """The current lower bound on every weight (ε_t)."""
        return self.eps

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        t = fb.step
        if not (t > self.warmup and t % self.update_every == 0):
            return None
        present = fb.present & (fb.tokens > 0)
        if not present.any():
            return None
        losses = fb.tok_mean
        a = self.smoothing
        self.reward[present] = a * self.reward[present] + (1 - a) * np.exp(losses[present])
        self.eps = odm_epsilon(t, self.K)
        return odm_weights(self.reward, self.eps)

    def _state(self) -> dict:
        return {"reward": self.reward.tolist(), "eps": self.eps}

    def _load_state(self, state: Mapping) -> None:
        self.reward = np.asarray(state["reward"], dtype=np.float64)
        self.eps = float(state["eps"])
