"""The explicit per-domain Data Mixing Law and its fitter.

For validation domain ``i`` and training proportions ``r`` (on the simplex)::

    L_i(r) = c_i + k_i · exp(Σ_j t_ij r_j),   parametrised as  exp(log_c_i) + exp(log_k_i + r·t_i)

(Ye et al., ICLR 2025; ``pipeline/utils.py mixture_law_`` in yegcjs/mixinglaws). Each
validation domain is fitted on its own with the multi-start Huber + L-BFGS procedure of
:mod:`mixstream.laws.huber_lbfgs` and the settings of ``mix_5_domains.ipynb``: Huber
``delta = 0.05``, ``max_step = 50``, starts ``log_c ∈ linspace(-2, 1.5, 10)`` x
``log_k ∈ linspace(-10, 1, 20)`` x 30 random ``t`` with ``t_ij ~ U(0, 0.1)`` (6000 starts).

Gauge: because ``Σ r_j = 1``, ``(log_k, t)`` and ``(log_k - δ, t + δ)`` predict the same
losses, so fitted ``t``/``k`` are not unique. :meth:`MixtureLawParams.gauge_fixed` fixes the
gauge (``t_i,ref = 0``); compare fits through predictions or gauge-fixed parameters.

Deviation: the random draws use ``numpy.random.default_rng(seed)`` (the authors used the
global numpy RNG seeded with 42), so the start set differs draw for draw but not in law.

Guard rails (not in the authors' notebooks, which are used by hand):

* ``fit`` refuses fewer mixtures than the law's ``M + 2`` parameters per validation domain and
  warns (:class:`LawWarning`) below ``2 (M + 1)`` (``M + 1`` identifiable parameters);
* every fit reports its leave-one-out error (:attr:`DataMixingLaw.loo_rmse`) next to the
  error of predicting the mean loss (:attr:`DataMixingLaw.loo_baseline`) — a law whose LOO
  error is not clearly below the baseline has not learned the mixture's effect;
* the fitted mixtures' range is kept; ``predict`` warns when a mixture lies more than
  ``EXTRAPOLATION_MARGIN`` outside it, and ``propose`` searches inside it by default
  (``trust_region=True``: each share at most the largest share fitted);
* mixtures must sum to 1 within ``SUM_TOLERANCE`` (1e-3) and are renormalised — the same rule
  in the API, the CSV reader and the CLI (:func:`check_mixtures`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mixstream.laws.continual import critical_proportion
from mixstream.laws.huber_lbfgs import fit_huber_lbfgs
from mixstream.laws.propose import propose_mixture
from mixstream.laws.table import SUM_TOLERANCE  # one rule for the API, the CSV and the CLI

EXTRAPOLATION_MARGIN = 0.05


class LawWarning(UserWarning):
    """A fit or prediction whose result should not be trusted as is (the message says why)."""


def check_mixtures(mixtures: np.ndarray | Sequence[float], what: str = "mixture") -> np.ndarray:
    """Mixtures ``[N, M]`` (or one ``[M]``) checked and renormalised.

    The one rule for API, tables and CLI: finite, >= 0, summing to 1 within
    :data:`SUM_TOLERANCE`; within it they are divided by their sum.
    """
    r = np.asarray(mixtures, dtype=np.float64)
    flat = np.atleast_2d(r)
    if not np.all(np.isfinite(flat)) or np.any(flat < 0):
        raise ValueError(f"every {what} must be finite and >= 0, got {flat.tolist()[:3]}")
    sums = flat.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{what} {flat[i].tolist()} sums to {sums[i]:.6g}; proportions must "
                         f"sum to 1 (±{SUM_TOLERANCE})")
    out = flat / sums[:, None]
    return out[0] if r.ndim == 1 else out


LOG_C_GRID = tuple(np.linspace(-2.0, 1.5, 10).tolist())
LOG_K_GRID = tuple(np.linspace(-10.0, 1.0, 20).tolist())
FORM = "L_i(r) = exp(log_c_i) + exp(log_k_i + sum_j t_ij r_j)"


def mixture_law(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Batched law: ``params [S, 2+M]`` = ``[log_c, log_k, t_1..t_M]``, ``x [N, M]`` -> ``[S, N]``."""
    return torch.exp(params[:, :1]) + torch.exp(params[:, 1:2] + params[:, 2:] @ x.T)


@dataclass(frozen=True)
class MixtureLawParams:
    """Fitted parameters: ``log_c [K]``, ``log_k [K]``, ``t [K, M]``."""

    log_c: np.ndarray
    log_k: np.ndarray
    t: np.ndarray

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """Losses ``[N, K]`` for mixtures ``[N, M]`` (or ``[K]`` for one mixture ``[M]``)."""
        r = np.asarray(mixtures, dtype=np.float64)
        one = r.ndim == 1
        r = np.atleast_2d(r)
        if r.shape[1] != self.t.shape[1]:
            raise ValueError(f"mixtures have {r.shape[1]} proportions, the law has "
                             f"{self.t.shape[1]} training domains")
        out = np.exp(self.log_c)[None, :] + np.exp(self.log_k[None, :] + r @ self.t.T)
        return out[0] if one else out

    def gauge_fixed(self, ref: int = -1) -> MixtureLawParams:
        """Equivalent parameters with ``t[:, ref] = 0`` (``log_k`` absorbs the shift)."""
        shift = self.t[:, ref]
        return MixtureLawParams(self.log_c.copy(), self.log_k + shift, self.t - shift[:, None])


def default_inits(n_domains: int, *, log_c_grid: Sequence[float] = LOG_C_GRID,
                  log_k_grid: Sequence[float] = LOG_K_GRID, n_random_t: int = 30,
                  t_high: float = 0.1, seed: int = 0) -> np.ndarray:
    """The authors' start grid: ``log_c`` x ``log_k`` x ``n_random_t`` draws of ``t ~ U(0, t_high)``."""
    if n_random_t < 1 or len(log_c_grid) == 0 or len(log_k_grid) == 0:
        raise ValueError("need non-empty log_c/log_k grids and n_random_t >= 1")
    rng = np.random.default_rng(seed)
    rows = []
    for lc in log_c_grid:
        for lk in log_k_grid:
            for _ in range(n_random_t):
                rows.append(np.concatenate([[lc, lk], rng.uniform(0.0, t_high, n_domains)]))
    return np.array(rows)


def _as_weights(weights: Mapping[str, float] | Sequence[float] | np.ndarray | None,
                names: Sequence[str]) -> np.ndarray:
    if weights is None:
        return np.full(len(names), 1.0 / len(names))
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise ValueError(f"unknown validation domain(s) {unknown}; known: {list(names)}")
        w = np.array([float(weights.get(n, 0.0)) for n in names])
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape[0] != len(names):
            raise ValueError(f"got {w.shape[0]} weights for {len(names)} validation domains")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"validation weights must be finite, >= 0 and not all zero, got {w}")
    return w / w.sum()


@dataclass
class DataMixingLaw:
    """Offline fitter: ``fit(mixtures, losses)``, ``predict(mixtures)``, ``propose(...)``."""

    delta: float = 0.05
    max_step: int = 50
    log_c_grid: Sequence[float] = LOG_C_GRID
    log_k_grid: Sequence[float] = LOG_K_GRID
    n_random_t: int = 30
    valid_split: int = 0
    seed: int = 0
    train_domains: tuple[str, ...] = ()
    val_domains: tuple[str, ...] = ()
    params: MixtureLawParams | None = None
    selection_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loo_rmse: np.ndarray | None = None       # [K] leave-one-out RMSE per validation domain
    loo_baseline: np.ndarray | None = None   # [K] LOO RMSE of predicting the mean loss
    fit_range: np.ndarray | None = None      # [2, M] min and max share of each domain fitted
    progress: Callable[[str], None] | None = None

    def n_params(self, m: int) -> int:
        """Parameters per validation domain of the law as written (``log_c, log_k, t_1..t_M``)."""
        return m + 2

    def fit(self, mixtures: np.ndarray, losses: np.ndarray, *,
            train_domains: Sequence[str] | None = None,
            val_domains: Sequence[str] | None = None, loo: bool = True,
            allow_underdetermined: bool = False) -> DataMixingLaw:
        """Fit one law per column of ``losses [N, K]`` on ``mixtures [N, M]``.

        Refuses ``N < M + 2`` (fewer mixtures than parameters; ``allow_underdetermined=True``
        downgrades it to a warning) and warns below ``2 (M + 1)``. With ``loo`` (default) the
        leave-one-out error is computed and stored in :attr:`loo_rmse`; each left-out fit
        starts from the full fit's optimum (one start, not the full grid: N x K cheap refits,
        a standard approximation that can only understate the error if the fit is multimodal).
        """
        y = np.asarray(losses, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        r0 = np.asarray(mixtures, dtype=np.float64)
        if r0.ndim != 2 or r0.shape[1] < 2 or y.ndim != 2 or r0.shape[0] != y.shape[0]:
            raise ValueError(f"need mixtures [N, M>=2] and losses [N, K] with the same N, got "
                             f"{r0.shape} and {y.shape}")
        r = check_mixtures(r0)
        if r.shape[0] < 3:
            raise ValueError(f"need at least 3 mixtures to fit a law, got {r.shape[0]}")
        if not np.all(np.isfinite(y)):
            raise ValueError("mixtures and losses must be finite")
        if np.any(y <= 0):
            raise ValueError("losses must be > 0")
        n, m, k = r.shape[0], r.shape[1], y.shape[1]
        need = self.n_params(m)
        if n < need:
            msg = (f"{n} mixtures for a law with {need} parameters per validation domain "
                   f"(M={m} training domains + 2): the fit is underdetermined and its "
                   f"proposals arbitrary. Give at least {2 * (m + 1)} mixtures (e.g. "
                   f"mixstream.laws.sample_mixtures({m}, {2 * (m + 1)})), or fewer domains")
            if not allow_underdetermined:
                raise ValueError(msg)
            warnings.warn(msg, LawWarning, stacklevel=2)
        elif n < 2 * (m + 1):
            warnings.warn(f"{n} mixtures for {m + 1} identifiable parameters per validation "
                          f"domain: the law is loosely determined; check loo_rmse against "
                          f"loo_baseline, and prefer >= {2 * (m + 1)} mixtures", LawWarning,
                          stacklevel=2)
        self.train_domains = tuple(train_domains or (f"d{j}" for j in range(m)))
        self.val_domains = tuple(val_domains or (f"v{i}" for i in range(k)))
        if len(self.train_domains) != m or len(self.val_domains) != k:
            raise ValueError("domain names do not match the table's columns")
        inits = default_inits(m, log_c_grid=self.log_c_grid, log_k_grid=self.log_k_grid,
                              n_random_t=self.n_random_t, seed=self.seed)
        t0 = time.monotonic()
        rows, sel = [], []
        for i in range(k):
            self._say(f"fitting the law of validation domain {self.val_domains[i]} "
                      f"({i + 1}/{k}, {len(inits)} starts, {time.monotonic() - t0:.0f}s)")
            res = fit_huber_lbfgs(mixture_law, r, y[:, i], inits, delta=self.delta,
                                  max_step=self.max_step, valid_split=self.valid_split)
            rows.append(res.params)
            sel.append(res.selection_loss)
        p = np.array(rows)
        self.params = MixtureLawParams(log_c=p[:, 0], log_k=p[:, 1], t=p[:, 2:])
        self.selection_loss = np.array(sel)
        self.fit_range = np.stack([r.min(axis=0), r.max(axis=0)])
        self.loo_rmse = self.loo_baseline = None
        if loo:
            self._loo(r, y, p, inits, t0)
        return self

    def _say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    def _loo(self, r: np.ndarray, y: np.ndarray, full: np.ndarray, inits: np.ndarray,
             t0: float) -> None:
        """Leave-one-out RMSE per validation domain, and that of predicting the mean."""
        n, k = y.shape
        err = np.zeros((n, k))
        base = np.zeros((n, k))
        for j in range(n):
            self._say(f"leave-one-out {j + 1}/{n} ({time.monotonic() - t0:.0f}s)")
            keep = np.arange(n) != j
            for i in range(k):
                res = fit_huber_lbfgs(mixture_law, r[keep], y[keep, i], full[i][None, :],
                                      delta=self.delta, max_step=self.max_step)
                pred = mixture_law(torch.from_numpy(res.params[None, :]),
                                   torch.from_numpy(r[j:j + 1])).item()
                err[j, i] = pred - y[j, i]
                base[j, i] = y[keep, i].mean() - y[j, i]
        self.loo_rmse = np.sqrt((err ** 2).mean(axis=0))
        self.loo_baseline = np.sqrt((base ** 2).mean(axis=0))
        worse = [d for d, a, b in zip(self.val_domains, self.loo_rmse, self.loo_baseline)
                 if not a < b]
        if worse:
            warnings.warn(f"leave-one-out error is not below that of predicting the mean loss "
                          f"for validation domain(s) {worse} (LOO RMSE "
                          f"{np.round(self.loo_rmse, 4).tolist()} vs "
                          f"{np.round(self.loo_baseline, 4).tolist()}): the law has not "
                          f"learned the mixture's effect; its proposals are not evidence",
                          LawWarning, stacklevel=3)

    def _fitted(self) -> MixtureLawParams:
        if self.params is None:
            raise ValueError("the law is not fitted yet; call fit() or load one with from_dict()")
        return self.params

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """Predicted per-validation-domain losses ``[N, K]`` (``[K]`` for one mixture).

        Mixtures follow :func:`check_mixtures`; one more than ``EXTRAPOLATION_MARGIN`` outside
        the fitted range of some domain raises a :class:`LawWarning` (the law is an
        exponential: far outside its data it can predict anything).
        """
        r = check_mixtures(mixtures)
        self._check_range(np.atleast_2d(r))
        return self._fitted().predict(r)

    def _check_range(self, r: np.ndarray) -> None:
        if self.fit_range is None:
            return
        lo, hi = self.fit_range
        over = np.maximum(lo[None, :] - r, r - hi[None, :]).max(axis=0)
        far = [f"{d} (fitted {a:.3g}..{b:.3g}, asked {o:+.3g} beyond)"
               for d, a, b, o in zip(self.train_domains, lo, hi, over)
               if o > EXTRAPOLATION_MARGIN]
        if far:
            warnings.warn(f"predicting outside the fitted mixtures: {', '.join(far)}; the law "
                          f"extrapolates there and its losses are not reliable", LawWarning,
                          stacklevel=3)

    def predict_total(self, mixtures: np.ndarray,
                      weights: Mapping[str, float] | Sequence[float] | None = None) -> np.ndarray:
        """``Σ_i s_i L_i(r)`` with validation weights ``s`` (default uniform)."""
        s = _as_weights(weights, self.val_domains)
        return self.predict(np.atleast_2d(np.asarray(mixtures, dtype=np.float64))) @ s

    def propose(self, weights: Mapping[str, float] | Sequence[float] | None = None, *,
                caps: Mapping[str, float] | Sequence[float] | None = None,
                method: str = "convex", grid: float = 1 / 16,
                trust_region: bool | float = True) -> np.ndarray:
        """The mixture minimising ``Σ_i s_i L_i(r)`` subject to ``0 <= r_j <= caps_j``, ``Σ r = 1``.

        ``method="convex"`` solves the problem exactly (the law is convex in ``r``);
        ``method="grid"`` takes the best point of the authors' halving grid
        (``pipeline/find_opt.py``). Returns proportions over :attr:`train_domains`.

        ``trust_region`` (default ``True``): each share is also capped at the largest share of
        that domain among the fitted mixtures (a float adds that margin), so the proposal stays
        where the law has data; ``False`` searches the whole simplex (the authors' behaviour,
        which can jump to a corner that switches domains off). Laws loaded without a fitted
        range have no trust region.
        """
        p = self._fitted()
        s = _as_weights(weights, self.val_domains)
        cap = None
        if caps is not None:
            if isinstance(caps, Mapping):
                unknown = [d for d in caps if d not in self.train_domains]
                if unknown:
                    raise ValueError(f"cap for unknown training domain(s) {unknown}; known: "
                                     f"{list(self.train_domains)}")
                cap = np.array([float(caps.get(d, 1.0)) for d in self.train_domains])
            else:
                cap = np.asarray(caps, dtype=np.float64)
        if trust_region is not False and self.fit_range is not None:
            margin = 0.0 if trust_region is True else float(trust_region)
            hi = np.minimum(self.fit_range[1] + margin, 1.0)
            both = hi if cap is None else np.minimum(np.asarray(cap, np.float64), hi)
            if both.sum() >= 1:
                cap = both
            else:
                warnings.warn("the trust region (largest fitted shares) and the caps leave no "
                              "mixture; proposing under the caps alone, outside the fitted "
                              "mixtures", LawWarning, stacklevel=2)
        with np.errstate(divide="ignore"):  # weight 0 -> log 0 = -inf drops the domain
            log_a = p.log_k + np.log(s)
        return propose_mixture(log_a, p.t, caps=cap, method=method, grid=grid)

    def critical_proportion(self, val_domain: str, original: str, target_loss: float,
                            new_mixture: Mapping[str, float] | Sequence[float] | None = None
                            ) -> float:
        """:func:`~mixstream.laws.continual.critical_proportion` by domain name."""
        for name, seq in ((val_domain, self.val_domains), (original, self.train_domains)):
            if name not in seq:
                raise ValueError(f"unknown domain {name!r}; known: {list(seq)}")
        q = None
        if new_mixture is not None:
            if isinstance(new_mixture, Mapping):
                unknown = [d for d in new_mixture if d not in self.train_domains]
                if unknown:
                    raise ValueError(f"unknown training domain(s) {unknown} in new_mixture")
                q = np.array([float(new_mixture.get(d, 0.0)) for d in self.train_domains])
            else:
                q = np.asarray(new_mixture, dtype=np.float64)
            q = check_mixtures(q, "new_mixture")
        return critical_proportion(self._fitted(), self.val_domains.index(val_domain),
                                   self.train_domains.index(original), target_loss, q)

    def to_dict(self) -> dict:
        """JSON-serialisable description of the fitted law."""
        p = self._fitted()
        return {"kind": "data_mixing_law", "form": FORM,
                "train_domains": list(self.train_domains), "val_domains": list(self.val_domains),
                "log_c": p.log_c.tolist(), "log_k": p.log_k.tolist(), "t": p.t.tolist(),
                "selection_loss": self.selection_loss.tolist(),
                "loo_rmse": None if self.loo_rmse is None else self.loo_rmse.tolist(),
                "loo_baseline": None if self.loo_baseline is None else self.loo_baseline.tolist(),
                "fit_range": None if self.fit_range is None else self.fit_range.tolist(),
                "fit": {"delta": self.delta, "max_step": self.max_step,
                        "valid_split": self.valid_split, "seed": self.seed}}

    @classmethod
    def from_dict(cls, d: Mapping) -> DataMixingLaw:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on malformed input."""
        try:
            if d.get("kind") != "data_mixing_law":
                raise ValueError(f"kind is {d.get('kind')!r}, expected 'data_mixing_law'")
            t = np.asarray(d["t"], dtype=np.float64)
            params = MixtureLawParams(np.asarray(d["log_c"], dtype=np.float64),
                                      np.asarray(d["log_k"], dtype=np.float64), t)
            law = cls(train_domains=tuple(d["train_domains"]), val_domains=tuple(d["val_domains"]),
                      params=params,
                      selection_loss=np.asarray(d.get("selection_loss", []), dtype=np.float64))
            for name in ("loo_rmse", "loo_baseline", "fit_range"):
                if d.get(name) is not None:
                    setattr(law, name, np.asarray(d[name], dtype=np.float64))
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed law description: missing or bad field {e}") from None
        k, m = len(law.val_domains), len(law.train_domains)
        if t.shape != (k, m) or params.log_c.shape != (k,) or params.log_k.shape != (k,):
            raise ValueError(f"law shapes do not match {k} validation x {m} training domains")
        return law
