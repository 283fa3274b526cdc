"""Aioli (Chen et al., ICLR 2025, arXiv 2411.05735); docs/methods/aioli.md.

Rounds of ``update_steps`` optimizer steps, following HazyResearch/aioli
``trainer/aioli_trainer.py``. Each round:

1. ``L_prev`` = per-domain validation loss;
2. LearnParams: for ``j`` in ``lp_rounds`` random permutations of the domains, train
   ``lp_steps`` real steps on the smoothed one-hot mixture (``one_hot_factor`` on ``j``, the
   rest spread evenly), evaluate, ``A[:, j] += L_prev - L_new``, ``L_prev = L_new``; then
   ``A /= lp_rounds``;
3. de-mix the smoothed one-hot probes (``A_row <- solve(W, A_row)``; ``diagonal=True``:
   ``A_jj <- A_jj / one_hot_factor`` only), normalise (``A -= min A`` if negative,
   ``A /= sum A``), optional EMA over rounds (``A_bar = (1-ema) A + ema A_bar``);
4. exponentiated gradient: with EMA ``p = exp(eta * sum_i A_bar[i, :])`` (from ones), without
   ``p <- p * exp(eta * sum_i A[i, :])``; train the rest of the round on ``p / sum p``.

Weight changes reach the stream at ``from_sample`` (after the samples the loader may already
have prefetched). A probe's window therefore starts when the trainer has consumed
``from_sample``: its first validation is taken then (reusing the previous probe's final one
when nothing was prefetched), and its ``lp_steps`` steps are counted from there. Steps spent
waiting train on the previous mixture and are attributed to no probe (released code has no
prefetch lag). ``warmup_steps`` steps on the stream's initial mixture precede the first round
(the paper's restricted setting). Permutations come from ``numpy.random.default_rng([seed,
round])``. Needs ``validate=`` (or :meth:`observe_validation` whenever
:meth:`wants_validation` is True); call ``feedback`` after ``optimizer.step()``.
Defaults: the README's 2-domain example (lp_rounds 4, lp_steps 4, eta 0.2, ema 0.1,
update_steps 250, one_hot_factor 0.625, normalised A).

Targets. By default the validation sets are the training domains (``A`` is ``K x K`` and
``p ∝ exp(η Σ_i Ā[i, :])``). ``targets=`` names validation sets that need not be training
domains — a list (equal weights), or ``{name: weight}`` — and then ``A`` is ``T x K`` (row
``i``: how much target ``i``'s loss drops under probe ``j``) and ``p ∝ exp(η Σ_i w_i Ā[i, :])``
(the default weights are 1 each, so one set per domain reproduces the released rule). The
``validate`` callable then returns ``{target name: loss}``, e.g.
``Validator(loss_fn, model, {"target": batches})``. ``diagonal=True`` needs square ``A`` (no
targets). See ``docs/methods/aioli.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..feedback import StepFeedback
from .base import Controller, Observer, Requirements, StreamLike


def probe_mixture(j: int, k: int, one_hot_factor: float) -> np.ndarray:
    """Smoothed one-hot mixture: ``one_hot_factor`` on ``j``, the rest spread evenly."""
    w = np.full(k, (1 - one_hot_factor) / (k - 1))
    w[j] = one_hot_factor
    return w


def aioli_matrix(a_sum: np.ndarray, lp_rounds: int, one_hot_factor: float, *,
                 diagonal: bool = False, normalize: bool = True) -> np.ndarray:
    """From accumulated loss drops (``a_sum[i, j]``: drop of validation set i under probe j)
    to A (``[T, K]``; ``T = K`` when the validation sets are the domains)."""
    k = a_sum.shape[1]
    a = a_sum / lp_rounds
    if one_hot_factor != 1:
        if diagonal:
            if a.shape[0] != k:
                raise ValueError("diagonal de-mixing needs a square A (one set per domain)")
            a = a.copy()
            a[np.diag_indices(k)] /= one_hot_factor
        else:
            w = np.stack([probe_mixture(j, k, one_hot_factor) for j in range(k)])
            a = np.linalg.solve(w, a.T).T   # each row: A_row <- solve(W, A_row)
    if normalize:
        if a.min() < 0:
            a = a - a.min()
        s = a.sum()
        if s > 0:
            a = a / s
    return a


class Aioli(Controller):
    """Aioli: probe mixtures + validation each round, then an exponentiated-gradient step."""

    requires = Requirements(val_losses=True)

    def __init__(self, stream: StreamLike, *, validate: Callable[[], Mapping[str, float]] | None
                 = None, update_steps: int = 250, lp_rounds: int = 4, lp_steps: int = 4,
                 eta: float = 0.2, ema: float | None = 0.1, one_hot_factor: float = 0.625,
                 diagonal: bool = False, normalize: bool = True, warmup_steps: int = 0,
                 seed: int = 0, observer: Observer | None = None,
                 targets: Sequence[str] | Mapping[str, float] | None = None) -> None:
        super().__init__(stream, observer=observer, validate=validate)
        if targets is not None:
            names = list(targets)
            if not names or len(set(names)) != len(names):
                raise ValueError(f"targets must be distinct names, got {names}")
            tw = [float(targets[n]) for n in names] if isinstance(targets, Mapping) else \
                [1.0] * len(names)
            if not all(np.isfinite(tw)) or min(tw) < 0 or sum(tw) <= 0:
                raise ValueError(f"target weights must be >= 0 and not all 0, got {tw}")
            if diagonal:
                raise ValueError("diagonal=True needs one validation set per training domain; "
                                 "drop targets= or diagonal")
            self.val_names = names
            self.target_weights = np.asarray(tw, dtype=np.float64)
        else:
            self.target_weights = np.ones(self.K)
        if self.K < 2:
            raise ValueError("Aioli needs at least 2 domains")
        if lp_rounds < 1 or lp_steps < 1:
            raise ValueError(f"lp_rounds and lp_steps must be >= 1, got {lp_rounds}, {lp_steps}")
        if update_steps <= self.K * lp_rounds * lp_steps:
            raise ValueError(f"update_steps ({update_steps}) must exceed K*lp_rounds*lp_steps = "
                             f"{self.K * lp_rounds * lp_steps} (the probe steps of one round)")
        if not 1 / self.K < one_hot_factor <= 1:
            raise ValueError(f"one_hot_factor must be in (1/K, 1] = ({1 / self.K:.3f}, 1], got "
                             f"{one_hot_factor}")
        if ema is not None and not 0 <= ema < 1:
            raise ValueError(f"ema must be in [0, 1) or None, got {ema}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        self.update_steps, self.lp_rounds, self.lp_steps = update_steps, lp_rounds, lp_steps
        self.eta, self.ema, self.one_hot_factor = float(eta), ema, float(one_hot_factor)
        self.diagonal, self.normalize = diagonal, normalize
        self.warmup_steps, self.seed = int(warmup_steps), int(seed)
        self.round = 0
        self.phase = "warmup"          # warmup | wait | probe | exploit
        self.need_val: str | None = None   # None | "start" | "end"
        self.round_start = 0
        self.order: list[int] = []
        self.probe = 0
        self.window_start = 0          # first sample of the current probe mixture
        self.probe_steps = 0
        self.l_start: np.ndarray | None = None
        self.last_val: tuple[int, list[float]] | None = None  # (consumed_samples, losses)
        self.a_sum = np.zeros((len(self.val_names), self.K))
        self.a_bar: np.ndarray | None = None
        self.log_p = np.zeros(self.K)
        self.a_history: list[list[list[float]]] = []

    # ------------------------------------------------------------ state machine
    def wants_validation(self) -> bool:
        return self.need_val is not None

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        if self.need_val is not None:
            raise ValueError("Aioli is waiting for validation losses: pass validate= or call "
                             "observe_validation(...) whenever wants_validation() is True")
        if self.phase == "warmup":
            if self.step >= self.warmup_steps:
                return self._start_round()
            return None
        if self.phase == "wait":
            self._check_window()
            return None
        if self.phase == "probe":
            self.probe_steps += 1
            if self.probe_steps >= self.lp_steps:
                self._request("end")
            return None
        if self.step - self.round_start >= self.update_steps:  # exploit phase over
            return self._start_round()
        return None

    def _start_round(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.round])
        self.order = [int(j) for _ in range(self.lp_rounds) for j in rng.permutation(self.K)]
        self.round_start, self.probe = self.step, 0
        self.a_sum = np.zeros((len(self.val_names), self.K))
        return self._begin_probe()

    def _begin_probe(self) -> np.ndarray:
        w = probe_mixture(self.order[self.probe], self.K, self.one_hot_factor)
        self.phase, self.probe_steps = "wait", 0
        # the push happens right after update() returns; window_start is set in _push
        return w

    def _push(self, w: np.ndarray) -> dict[str, float] | None:
        same = np.array_equal(w / w.sum(), self._weights)
        out = super()._push(w)
        if self.phase == "wait":
            if not same:
                assert self.last_from_sample is not None
                self.window_start = self.last_from_sample
            else:
                self.window_start = self.stream.consumed_samples
            self._check_window()
        return out

    def _check_window(self) -> None:
        if self.stream.consumed_samples >= self.window_start:
            self.phase = "probe"
            self._request("start")

    def _request(self, what: str) -> None:
        consumed = self.stream.consumed_samples
        if what == "start" and self.last_val is not None and self.last_val[0] == consumed:
            self.l_start = np.asarray(self.last_val[1])
            return
        self.need_val = what

    def update_validation(self, losses: np.ndarray) -> np.ndarray | None:
        what = self.need_val
        if what is None:
            raise ValueError("Aioli did not ask for validation losses now (wants_validation() is "
                             "False)")
        self.need_val = None
        self.last_val = (self.stream.consumed_samples, losses.tolist())
        if what == "start":
            self.l_start = losses.copy()
            return None
        assert self.l_start is not None
        j = self.order[self.probe]
        self.a_sum[:, j] += self.l_start - losses
        self.probe += 1
        if self.probe < len(self.order):
            return self._begin_probe()
        return self._finish_round()

    def _finish_round(self) -> np.ndarray:
        a = aioli_matrix(self.a_sum, self.lp_rounds, self.one_hot_factor,
                         diagonal=self.diagonal, normalize=self.normalize)
        self.a_history.append(a.tolist())
        if self.ema is not None:
            self.a_bar = a if self.a_bar is None else (1 - self.ema) * a + self.ema * self.a_bar
            self.log_p = self.eta * (self.target_weights @ self.a_bar)
        else:
            self.log_p = self.log_p + self.eta * (self.target_weights @ a)
        self.round += 1
        self.phase = "exploit"
        p = np.exp(self.log_p - self.log_p.max())
        return p / p.sum()

    @property
    def mixing_matrix(self) -> np.ndarray | None:
        """The last round's A (EMA-smoothed if ``ema`` is set); None before the first round."""
        if self.ema is not None and self.a_bar is not None:
            return self.a_bar.copy()
        return None if not self.a_history else np.asarray(self.a_history[-1])

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        return {"round": self.round, "phase": self.phase, "need_val": self.need_val,
                "round_start": self.round_start, "order": self.order, "probe": self.probe,
                "window_start": self.window_start, "probe_steps": self.probe_steps,
                "l_start": None if self.l_start is None else self.l_start.tolist(),
                "last_val": None if self.last_val is None else [self.last_val[0],
                                                                list(self.last_val[1])],
                "a_sum": self.a_sum.tolist(),
                "a_bar": None if self.a_bar is None else self.a_bar.tolist(),
                "log_p": self.log_p.tolist(), "a_history": self.a_history}

    def _load_state(self, s: Mapping) -> None:
        self.round, self.phase, self.need_val = int(s["round"]), s["phase"], s["need_val"]
        self.round_start, self.order = int(s["round_start"]), [int(j) for j in s["order"]]
        self.probe, self.window_start = int(s["probe"]), int(s["window_start"])
        self.probe_steps = int(s["probe_steps"])
        self.l_start = None if s["l_start"] is None else np.asarray(s["l_start"])
        lv = s["last_val"]
        self.last_val = None if lv is None else (int(lv[0]), [float(x) for x in lv[1]])
        self.a_sum = np.asarray(s["a_sum"], dtype=np.float64)
        self.a_bar = None if s["a_bar"] is None else np.asarray(s["a_bar"], dtype=np.float64)
        self.log_p = np.asarray(s["log_p"], dtype=np.float64)
        self.a_history = s["a_history"]
