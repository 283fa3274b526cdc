"""ADO — Adaptive Data Optimization (Jiang et al., ICLR 2025, arXiv 2410.11820).

docs/methods/ado.md, following yidingjiang/ado ``src/data_selectors/ado.py`` (``AdoSelector``).
Per step (``itr`` = 0-based step):

* record per-domain counts and the per-domain mean per-sample loss (absent domain: previous
  value; first step: the batch mean); history ``h <- 0.9 h + 0.1 counts / batch``;
* every ``update_interval`` steps from ``start_step`` refit ``L_k(n) = exp(e_k) +
  exp(a_k) / n^alpha_k`` per domain (:mod:`.ado_fit`) on (cumulative count,
  Savitzky–Golay-smoothed loss (window 101, order 3)) at every 10th step after ``ignore_steps``;
  a fit with NaN/inf is discarded;
* from ``start_step`` on, once fitted: ``slope_k = max(alpha_k, 0.05)(L_k(n) - exp(e_k)) / n``,
  ``rho_k = slope_k mu_k credit(h_k)``, ``pi = clip_min_probability(rho / sum rho, 0.01)``,
  ``p = 0.9 p_avg + 0.1 pi``, ``p_avg <- (1 - 1/(itr+1)) p_avg + pi / (itr+1)``; ``p`` is the
  sampling mixture (the floor is exact, see :func:`.simplex.clip_min_probability`). Before that the mixture is the prior ``mu`` (pushed at construction).

Choices and quirks: ``use_same_step_size=True`` (released default) makes ``n`` the *total*
number of samples seen, the same for every domain. ``credit="h"`` uses ``h^s`` as in the
paper/spec; the released code (commit 731863d) uses ``(h (1 - h))^s`` — ``credit="h(1-h)"``.
The floor 0.01 applies to ``pi``; ``p`` mixes it with ``p_avg`` (initialised to ``mu``), so
``p >= 0.1 * min_prob`` always and ``>= min_prob`` when every ``mu_k >= min_prob``. If every
``rho_k`` is 0 (fully converged fits) ``pi`` is uniform. ``y_axis="val_loss"`` fits on
validation losses taken every ``val_every`` steps instead. The fit uses scipy (see
:mod:`.ado_fit` for the multi-start deviation). State grows by one row per step: realised
counts (int32) and losses (float32, as released), K values each, stored base64 in the state
(~16 bytes x K per step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..feedback import StepFeedback
from ..plan.weights import WeightsLike
from .ado_fit import fit_free_alpha_power_law, free_alpha_power_law
from .base import Controller, Observer, Requirements, StreamLike
from .history import History
from .simplex import as_vector, clip_min_probability, scale_to_unit_sum
from .sizes import domain_sizes


def ado_policy(params: np.ndarray, n_seen: np.ndarray, prior: np.ndarray, history: np.ndarray,
               *, credit: str = "h", exponent: float = 0.5, min_prob: float = 0.01) -> np.ndarray:
    """The instantaneous ADO distribution ``pi`` (pure; params rows are (a, e, alpha))."""
    irred = np.exp(params[:, 1])
    expnt = np.maximum(params[:, 2], 0.05)
    curr = free_alpha_power_law(params, n_seen)
    slope = expnt * (curr - irred) / n_seen
    h = history if credit == "h" else history * (1 - history)
    rho = slope * prior * np.power(np.maximum(h, 0.0), exponent)
    total = rho.sum()
    pi = rho / total if np.isfinite(total) and total > 0 else np.full(len(rho), 1 / len(rho))
    return clip_min_probability(pi, min_prob)


def savgol(y: np.ndarray, window: int, order: int = 3) -> np.ndarray:
    """Savitzky–Golay smoothing along axis 0 with edge fits, like scipy's ``mode="interp"``.

    Pure numpy (scipy.signal takes a second to import): interior points are the value at the
    window centre of a least-squares polynomial of ``order``; the first and last
    ``window // 2`` points are evaluated from the polynomial fitted to the first/last window.
    """
    t, h = y.shape[0], window // 2
    if window % 2 != 1 or window <= order or window > t:
        raise ValueError(f"savgol needs an odd window in ({order}, {t}], got {window}")
    x = np.arange(-h, h + 1, dtype=np.float64)
    vander = np.vander(x, order + 1, increasing=True)          # [w, order+1]
    proj = np.linalg.pinv(vander)                               # [order+1, w]
    windows = np.lib.stride_tricks.sliding_window_view(y, window, axis=0)  # [t-w+1, ..., w]
    out = np.empty_like(y, dtype=np.float64)
    out[h:t - h] = windows @ proj[0]
    for sl, pos in ((slice(0, window), np.arange(0, h) - h), (slice(t - window, t),
                                                               np.arange(1, h + 1))):
        coef = np.tensordot(proj, y[sl], axes=(1, 0))           # [order+1, ...]
        basis = np.vander(pos.astype(np.float64), order + 1, increasing=True)
        vals = np.tensordot(basis, coef, axes=(1, 0))
        if sl.start == 0:
            out[:h] = vals
        else:
            out[t - h:] = vals
    return out


def smooth(loss_tk: np.ndarray, window: int, order: int = 3) -> np.ndarray | None:
    """Savitzky–Golay along time (axis 0); window shrunk to the data (odd, > order)."""
    t = loss_tk.shape[0]
    w = min(window, t if t % 2 == 1 else t - 1)
    if w <= order:
        return None
    return savgol(loss_tk, w, order)


class ADO(Controller):
    """Adaptive Data Optimization: per-domain scaling-law fits of the training loss."""

    requires = Requirements(train_losses=True, loss_weighting="sequence", domain_sizes=True)

    def __init__(self, stream: StreamLike, *, prior: str | WeightsLike = "empirical",
                 size_unit: str = "auto", update_interval: int = 1000, start_step: int = 1000,
                 ignore_steps: int = 1000, smoothing_window: int = 101, subsample: int = 10,
                 min_prob: float = 0.01, history_decay: float = 0.9, policy_mix: float = 0.1,
                 credit: str = "h", credit_exponent: float = 0.5,
                 use_same_step_size: bool = True, n_starts: int | None = 8,
                 y_axis: str = "train_loss", val_every: int = 100,
                 validate: Callable[[], Mapping[str, float]] | None = None,
                 observer: Observer | None = None) -> None:
        if update_interval < 1 or subsample < 1 or start_step < 0 or ignore_steps < 0:
            raise ValueError("ADO needs update_interval >= 1, subsample >= 1, start_step >= 0, "
                             f"ignore_steps >= 0; got {update_interval}, {subsample}, "
                             f"{start_step}, {ignore_steps}")
        if credit not in ("h", "h(1-h)"):
            raise ValueError(f"credit must be 'h' or 'h(1-h)', got {credit!r}")
        if y_axis not in ("train_loss", "val_loss"):
            raise ValueError(f"y_axis must be 'train_loss' or 'val_loss', got {y_axis!r}")
        super().__init__(stream, observer=observer, validate=validate)
        if not 0 <= min_prob * self.K <= 1:
            raise ValueError(f"min_prob {min_prob} x {self.K} domains must be in [0, 1]")
        if isinstance(prior, str):
            if prior == "uniform":
                mu = np.full(self.K, 1.0 / self.K)
            elif prior == "empirical":
                sizes, _ = domain_sizes(stream.domain_stats(), self.domains, size_unit)
                mu = sizes / sizes.sum()
            else:
                raise ValueError(f"prior must be 'empirical', 'uniform' or weights, got {prior!r}")
        else:
            mu = scale_to_unit_sum(as_vector(prior, self.domains, "ADO prior"), "ADO prior")
        self.prior = mu
        self.update_interval, self.start_step = int(update_interval), int(start_step)
        self.ignore_steps, self.window, self.subsample = int(ignore_steps), smoothing_window, subsample
        self.min_prob, self.history_decay, self.policy_mix = min_prob, history_decay, policy_mix
        self.credit, self.credit_exponent = credit, credit_exponent
        self.use_same_step_size, self.n_starts = use_same_step_size, n_starts
        self.y_axis, self.val_every = y_axis, int(val_every)
        self.params: np.ndarray | None = None
        self.counts = History(self.K, np.int32)    # realised sequences per step and domain
        self.losses = History(self.K, np.float32)  # per-domain mean loss per step (imputed)
        self.val_steps: list[int] = []
        self.val_losses: list[list[float]] = []
        self.n_seen = np.zeros(self.K)
        self.history = mu.copy()
        self.p_avg = mu.copy()
        self.p = mu.copy()
        self.fits = 0
        self._push(mu)

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        counts = fb.counts
        total = counts.sum()
        if total <= 0:
            return None
        itr = fb.step - 1
        self.counts.append(counts)
        self.n_seen = self.n_seen + (total if self.use_same_step_size else counts)
        self.history = (self.history_decay * self.history
                        + (1 - self.history_decay) * counts / total)
        mean = fb.seq_mean
        prev = self.losses.last() if len(self.losses) else np.full(self.K, fb.batch_mean)
        self.losses.append(np.where(counts > 0, mean, prev))
        if itr >= self.start_step and itr % self.update_interval == 0:
            self.refit()
        if itr < self.start_step or self.params is None:
            return None
        pi = ado_policy(self.params, self.n_seen, self.prior, self.history, credit=self.credit,
                        exponent=self.credit_exponent, min_prob=self.min_prob)
        self.p = (1 - self.policy_mix) * self.p_avg + self.policy_mix * pi
        self.p_avg = (1 - 1 / (itr + 1)) * self.p_avg + pi / (itr + 1)
        return self.p / self.p.sum()

    def refit(self) -> bool:
        """Refit every domain's law now; returns False (keeping the old fit) if not possible."""
        cum = np.cumsum(self.sample_axis(), axis=0)
        if self.y_axis == "train_loss":
            sm = smooth(self.losses.array.astype(np.float64), self.window)
            if sm is None:
                return False
            n_kt, l_kt = cum[self.ignore_steps::self.subsample].T, sm[self.ignore_steps::self.subsample].T
        else:
            keep = [i for i, s in enumerate(self.val_steps) if s >= self.ignore_steps]
            if not keep:
                return False
            steps = [self.val_steps[i] for i in keep]
            n_kt = cum[steps].T
            l_kt = np.asarray([self.val_losses[i] for i in keep], dtype=np.float64).T
        if n_kt.shape[1] < 3 or np.any(l_kt <= 0):
            return False
        params = np.stack([fit_free_alpha_power_law(n_kt[k], l_kt[k], n_starts=self.n_starts)
                           for k in range(self.K)])
        if not np.all(np.isfinite(params)):
            return False
        self.params = params
        self.fits += 1
        return True

    def sample_axis(self) -> np.ndarray:
        """Per-step sample increments ``[T, K]``: the batch total for every domain with
        ``use_same_step_size`` (released default), else the domain's own count."""
        c = self.counts.array.astype(np.float64)
        return np.repeat(c.sum(1, keepdims=True), self.K, axis=1) if self.use_same_step_size else c

    def wants_validation(self) -> bool:
        return self.y_axis == "val_loss" and self.step > 0 and (self.step - 1) % self.val_every == 0 \
            and (not self.val_steps or self.val_steps[-1] != self.step - 1)

    def update_validation(self, losses: np.ndarray) -> np.ndarray | None:
        if self.y_axis != "val_loss":
            raise ValueError("this ADO fits on training losses; set y_axis='val_loss' to use "
                             "validation losses")
        self.val_steps.append(self.step - 1)
        self.val_losses.append(losses.tolist())
        return None

    def law(self) -> dict[str, tuple[float, float, float]] | None:
        """Fitted (irreducible loss exp(e), multiplier exp(a), exponent alpha) per domain."""
        if self.params is None:
            return None
        return {d: (float(np.exp(p[1])), float(np.exp(p[0])), float(p[2]))
                for d, p in zip(self.domains, self.params, strict=True)}

    def _state(self) -> dict:
        return {"params": None if self.params is None else self.params.tolist(),
                "counts": self.counts.state_dict(), "losses": self.losses.state_dict(),
                "val_steps": self.val_steps,
                "val_losses": self.val_losses, "history": self.history.tolist(),
                "p_avg": self.p_avg.tolist(), "p": self.p.tolist(), "fits": self.fits}

    def _load_state(self, state: Mapping) -> None:
        self.params = None if state["params"] is None else np.asarray(state["params"])
        self.counts = History.from_state(state["counts"])
        self.losses = History.from_state(state["losses"])
        self.n_seen = self.sample_axis().sum(0)
        self.val_steps = [int(s) for s in state["val_steps"]]
        self.val_losses = [list(map(float, r)) for r in state["val_losses"]]
        self.history = np.asarray(state["history"], dtype=np.float64)
        self.p_avg = np.asarray(state["p_avg"], dtype=np.float64)
        self.p = np.asarray(state["p"], dtype=np.float64)
        self.fits = int(state["fits"])
