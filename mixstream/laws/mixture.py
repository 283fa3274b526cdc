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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mixstream.laws.huber_lbfgs import fit_huber_lbfgs
from mixstream.laws.propose import propose_mixture

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

    def fit(self, mixtures: np.ndarray, losses: np.ndarray, *,
            train_domains: Sequence[str] | None = None,
            val_domains: Sequence[str] | None = None) -> DataMixingLaw:
        """Fit one law per column of ``losses [N, K]`` on ``mixtures [N, M]``."""
        r = np.asarray(mixtures, dtype=np.float64)
        y = np.asarray(losses, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if r.ndim != 2 or r.shape[1] < 2 or y.ndim != 2 or r.shape[0] != y.shape[0]:
            raise ValueError(f"need mixtures [N, M>=2] and losses [N, K] with the same N, got "
                             f"{r.shape} and {y.shape}")
        if r.shape[0] < 3:
            raise ValueError(f"need at least 3 mixtures to fit a law, got {r.shape[0]}")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(y))):
            raise ValueError("mixtures and losses must be finite")
        if np.any(r < 0) or np.any(np.abs(r.sum(axis=1) - 1) > 1e-3):
            raise ValueError("every mixture must be >= 0 and sum to 1")
        if np.any(y <= 0):
            raise ValueError("losses must be > 0")
        m, k = r.shape[1], y.shape[1]
        self.train_domains = tuple(train_domains or (f"d{j}" for j in range(m)))
        self.val_domains = tuple(val_domains or (f"v{i}" for i in range(k)))
        if len(self.train_domains) != m or len(self.val_domains) != k:
            raise ValueError("domain names do not match the table's columns")
        inits = default_inits(m, log_c_grid=self.log_c_grid, log_k_grid=self.log_k_grid,
                              n_random_t=self.n_random_t, seed=self.seed)
        rows, sel = [], []
        for i in range(k):
            res = fit_huber_lbfgs(mixture_law, r, y[:, i], inits, delta=self.delta,
                                  max_step=self.max_step, valid_split=self.valid_split)
            rows.append(res.params)
            sel.append(res.selection_loss)
        p = np.array(rows)
        self.params = MixtureLawParams(log_c=p[:, 0], log_k=p[:, 1], t=p[:, 2:])
        self.selection_loss = np.array(sel)
        return self

    def _fitted(self) -> MixtureLawParams:
        if self.params is None:
            raise ValueError("the law is not fitted yet; call fit() or load one with from_dict()")
        return self.params

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """Predicted per-validation-domain losses ``[N, K]``."""
        return self._fitted().predict(mixtures)

    def predict_total(self, mixtures: np.ndarray,
                      weights: Mapping[str, float] | Sequence[float] | None = None) -> np.ndarray:
        """``Σ_i s_i L_i(r)`` with validation weights ``s`` (default uniform)."""
        s = _as_weights(weights, self.val_domains)
        return self.predict(np.atleast_2d(mixtures)) @ s

    def propose(self, weights: Mapping[str, float] | Sequence[float] | None = None, *,
                caps: Mapping[str, float] | Sequence[float] | None = None,
                method: str = "convex", grid: float = 1 / 16) -> np.ndarray:
        """The mixture minimising ``Σ_i s_i L_i(r)`` subject to ``0 <= r_j <= caps_j``, ``Σ r = 1``.

        ``method="convex"`` solves the problem exactly (the law is convex in ``r``);
        ``method="grid"`` takes the best point of the authors' halving grid
        (``pipeline/find_opt.py``). Returns proportions over :attr:`train_domains`.
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
        with np.errstate(divide="ignore"):  # weight 0 -> log 0 = -inf drops the domain
            log_a = p.log_k + np.log(s)
        return propose_mixture(log_a, p.t, caps=cap, method=method, grid=grid)

    def to_dict(self) -> dict:
        """JSON-serialisable description of the fitted law."""
        p = self._fitted()
        return {"kind": "data_mixing_law", "form": FORM,
                "train_domains": list(self.train_domains), "val_domains": list(self.val_domains),
                "log_c": p.log_c.tolist(), "log_k": p.log_k.tolist(), "t": p.t.tolist(),
                "selection_loss": self.selection_loss.tolist(),
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
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed law description: missing or bad field {e}") from None
        k, m = len(law.val_domains), len(law.train_domains)
        if t.shape != (k, m) or params.log_c.shape != (k,) or params.log_k.shape != (k,):
            raise ValueError(f"law shapes do not match {k} validation x {m} training domains")
        return law
