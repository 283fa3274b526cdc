"""The implicit mixing law: a small MLP from mixture to (weighted total) loss.

The Data Mixing Laws authors' final RedPajama pipeline (``pipeline/mixlaw.py`` in
yegcjs/mixinglaws) does not use the explicit exponential law in its last step: it fits an
MLP regressor, boosted, from the mixture to the validation-weighted total loss and searches
the halving grid for the best predicted mixture. This module offers that as an option next
to :class:`~mixstream.laws.mixture.DataMixingLaw`, and :func:`compare_laws` reports both
laws' held-out errors on the same folds so the choice is made on evidence.

Deviation: an ensemble of bootstrap-resampled MLPs (bagging, torch, full-batch Adam) stands
in for scikit-learn's AdaBoost over MLPs — no scikit-learn dependency; both average many
small regressors. Inputs are shares, targets standardised; the MLP has ``tanh`` units.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mixstream.laws.huber_lbfgs import one_thread
from mixstream.laws.mixture import DataMixingLaw, LawWarning, _as_weights, check_mixtures
from mixstream.laws.propose import check_caps, halving_grid


class _Ensemble(nn.Module):
    """``E`` independent MLPs ``M -> H -> H -> 1`` (tanh) evaluated as one batched network."""

    def __init__(self, e: int, m: int, h: int) -> None:
        super().__init__()

        def w(i: int, o: int) -> nn.Parameter:
            return nn.Parameter((torch.rand(e, i, o, dtype=torch.float64) * 2 - 1) / i ** 0.5)

        self.w1, self.w2, self.w3 = w(m, h), w(h, h), w(h, 1)
        self.b1 = nn.Parameter(torch.zeros(e, 1, h, dtype=torch.float64))
        self.b2 = nn.Parameter(torch.zeros(e, 1, h, dtype=torch.float64))
        self.b3 = nn.Parameter(torch.zeros(e, 1, 1, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [E, N, M] -> [E, N]
        z = torch.tanh(torch.baddbmm(self.b1, x, self.w1))
        z = torch.tanh(torch.baddbmm(self.b2, z, self.w2))
        return torch.baddbmm(self.b3, z, self.w3).squeeze(2)


@dataclass
class ImplicitMixingLaw:
    """``fit(mixtures [N, M], total_loss [N])``, ``predict``, ``propose`` on the halving grid."""

    hidden: int = 32
    n_models: int = 8
    steps: int = 1500
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0
    net: _Ensemble | None = None
    y_mean: float = 0.0
    y_std: float = 1.0
    fit_range: np.ndarray | None = None

    def fit(self, mixtures: np.ndarray, total_loss: np.ndarray) -> ImplicitMixingLaw:
        r = check_mixtures(np.asarray(mixtures, dtype=np.float64))
        y = np.asarray(total_loss, dtype=np.float64).reshape(-1)
        if r.ndim != 2 or r.shape[0] != y.shape[0] or r.shape[0] < 3:
            raise ValueError(f"need mixtures [N>=3, M] and N losses, got {r.shape}, {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("losses must be finite")
        self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        gen = np.random.default_rng(self.seed)
        idx = torch.from_numpy(gen.integers(0, len(y), size=(self.n_models, len(y))))  # bootstrap
        x = torch.from_numpy(r)[idx]                                # [E, N, M]
        t = torch.from_numpy((y - self.y_mean) / self.y_std)[idx]  # [E, N]
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            net = _Ensemble(self.n_models, r.shape[1], self.hidden)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        with one_thread():  # tiny ops: extra threads only add contention (6x slower measured)
            for _ in range(self.steps):
                opt.zero_grad()
                loss = ((net(x) - t) ** 2).mean(1).sum()
                loss.backward()
                opt.step()
        self.net = net.eval()
        self.fit_range = np.stack([r.min(axis=0), r.max(axis=0)])
        return self

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """Predicted total loss ``[N]`` (a float for one mixture ``[M]``)."""
        if self.net is None:
            raise ValueError("the implicit law is not fitted yet; call fit()")
        r = check_mixtures(mixtures)
        x = torch.from_numpy(np.atleast_2d(r))
        with torch.no_grad():
            z = self.net(x.expand(self.n_models, -1, -1)).mean(0).numpy()
        out = z * self.y_std + self.y_mean
        return out[0] if r.ndim == 1 else out

    def propose(self, caps: Sequence[float] | None = None, grid: float = 1 / 16,
                trust_region: bool = True) -> np.ndarray:
        """The halving-grid mixture with the lowest prediction (``pipeline/find_opt.py``);
        ``trust_region`` keeps shares at most the largest fitted share (an MLP extrapolates
        even less reliably than the explicit law)."""
        if self.fit_range is None:
            raise ValueError("the implicit law is not fitted yet; call fit()")
        m = self.fit_range.shape[1]
        c = check_caps(None if caps is None else np.asarray(caps, dtype=np.float64), m)
        if trust_region and np.minimum(c, self.fit_range[1]).sum() >= 1:
            c = np.minimum(c, self.fit_range[1])
        cand = halving_grid(c, grid)
        return cand[int(np.argmin(self.predict(cand)))].copy()


def compare_laws(mixtures: np.ndarray, losses: np.ndarray,
                 weights: Mapping[str, float] | Sequence[float] | None = None, *,
                 folds: int = 5, explicit: DataMixingLaw | None = None,
                 implicit: ImplicitMixingLaw | None = None, seed: int = 0) -> dict[str, float]:
    """Held-out RMSE of the weighted total loss: explicit law, implicit law, and the mean.

    ``folds``-fold cross-validation (leave-one-out when ``folds >= N``) on the same splits.
    ``explicit``/``implicit`` are templates whose settings are copied (defaults otherwise).
    Returns ``{"explicit": ..., "implicit": ..., "mean": ..., "folds": ...}``.
    """
    r = check_mixtures(np.asarray(mixtures, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n = r.shape[0]
    folds = min(int(folds), n)
    if folds < 2:
        raise ValueError(f"need >= 2 folds and mixtures, got {folds} for {n} mixtures")
    tpl = explicit or DataMixingLaw()
    imp = implicit or ImplicitMixingLaw()
    s = DataMixingLaw(val_domains=tuple(f"v{i}" for i in range(y.shape[1])))
    w = _as_weights(weights, s.val_domains)
    total = y @ w
    split = np.random.default_rng(seed).permutation(n) % folds
    err: dict[str, list[float]] = {"explicit": [], "implicit": [], "mean": []}
    for f in range(folds):
        tr, te = split != f, split == f
        law = DataMixingLaw(delta=tpl.delta, max_step=tpl.max_step, log_c_grid=tpl.log_c_grid,
                            log_k_grid=tpl.log_k_grid, n_random_t=tpl.n_random_t,
                            seed=tpl.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LawWarning)
            law.fit(r[tr], y[tr], loo=False, allow_underdetermined=True)
            pe = law.predict(r[te]) @ w
        pi = ImplicitMixingLaw(imp.hidden, imp.n_models, imp.steps, imp.lr, imp.weight_decay,
                               imp.seed).fit(r[tr], total[tr]).predict(r[te])
        err["explicit"] += (pe - total[te]).tolist()
        err["implicit"] += (np.atleast_1d(pi) - total[te]).tolist()
        err["mean"] += (total[tr].mean() - total[te]).tolist()
    out = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in err.items()}
    out["folds"] = float(folds)
    return out
