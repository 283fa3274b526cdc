"""AC-ODM — actor-critic online data mixing (Ma, Dang, Liao; arXiv 2505.23878, ICML 2026).

docs/methods/acodm.md, following DANG-ai/AC-ODM (``megatron/data/agent.py``, ``training.py``).
Every optimizer step, from the step's per-domain mean losses, per-domain gradients ``g_k`` on a
few selected weight matrices and the Frobenius norms of ``L`` weight matrices:

* reward ``r = clip(zscore(s), -3, 3)``, ``s_k = Σ_{j≠k} ⟨g_k, g_j⟩ / (mean_k ‖g_k‖ + 1e-6)``;
* state (dim ``3K + 2L + 1``) ``[z(ℓ_k), z(ℓ_k - ℓ_k^ref), z(n_k), z(‖W_l‖), z(‖W_l - W_l^ref‖),
  100 t/T]``, ``z = clip(zscore, -3, 3)`` across entries;
* transition ``(s_{t-1}, a_{t-1}, r_t, s_t)`` into the replay pool (FIFO, 10 000);
* warm-up (first ``warmup`` steps, default 2 % of ``total_steps``): actions from ODM's
  smoothed-mean weighter (smoothing 0.5, ε-floor), agent warm-up regression each step; at the end
  the target networks are synced;
* afterwards one DDPG update per step on a minibatch of 32 and the action
  ``a = normalise(max(μ(s_t) - U(0,1)^K / 1000, 0))``.

Modes: non-proxy (``agent=None``: learned online) and proxy (``agent=`` a file written by
:meth:`ACODM.save_agent` on a small run: the four networks are loaded frozen; no rewards, no
updates; the ODM warm-up still runs, then the frozen actor maps this model's state to weights).
The state dimension must match: same domains and the same number ``L`` of norm matrices.

Feeding it: build a :class:`~mixstream.model.ModelContext` and pass ``ctx``, ``grad_params``
(the released code: 3 ``mlp.dense_4h_to_h.weight`` matrices) and ``norm_params`` (9 such
matrices), then call ``feedback(batch["domain"], loss_per_seq, batch=batch)`` after every
optimizer step (``batch`` = all samples of the step; it must hold every domain, see
:class:`~mixstream.controllers.acodm_batches.ForcedDomainBatches`). Without a ctx pass
``grads=`` (``[K, P]`` per-domain mean gradients) and ``norms=`` (``[L]``) yourself.

Per-domain gradients (``grad_source``): ``"backward"`` takes them from the trainer's own
backward passes, as the released code does — wrap each single-domain micro-batch's
``backward()`` in ``with mixer.recorder.record(k):`` (:class:`~mixstream.model.DomainGradRecorder`
differences the accumulated ``.grad``; cost: one copy of the chosen matrices per micro-batch);
``"extra"`` runs one extra forward of the step's batch and one ``autograd.grad`` per domain
(``ModelContext.domain_grads``; works on mixed batches, ≈ +50 % compute for a small GPT);
``"auto"`` (default) uses the recorded gradients when a step recorded any, else the extra pass.
See ``docs/methods/acodm.md`` for the measured costs.

``min_weight`` (default 0, released: none) floors the actor's mixture at ``m`` per domain
(``(1 - K m) a + m``): the action-weighted objective is linear in the action, so the actor can
put everything on one domain; the forced single-domain micro-batches are the only floor
otherwise.

Actor objective (``objective``, see :mod:`.acodm_agent`): ``"action_weighted"`` (default,
``Σ_k μ_k Q_k``), ``"mean_q"`` (the released loss, stepped) or ``"released"`` (faithful: the
actor is never stepped). The released objective has no learning signal because the z-scored
rewards sum to zero across domains at every step.

Deviations from the released code (each deliberate): the actor is trained unless
``objective="released"``; AdamW at a constant lr; across ranks the per-domain gradients are count-weighted averages
(all-reduced) before the Gram matrix, so every rank computes the same reward and the same
weights without the released all-reduce of the actions; the count feature ``n_k`` is sequences
per domain in the step (released: micro-batches × micro-batch size, the same for single-domain
micro-batches); the exploration noise has K entries (released: hard-coded 22) and the result is
clipped at 0 before normalising; a domain absent from a step keeps its previous loss in the state.
``delta_reference="first"`` keeps the released Δ features (relative to the first measured step,
a [QUIRK]); ``"previous"`` uses the previous step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..feedback import StepFeedback, all_reduce_sum
from .acodm_agent import DDPGAgent, ReplayPool, from_b64, to_b64
from .base import Controller, GradRequest, Observer, Requirements, StreamLike
from .odm import odm_epsilon, odm_weights

if TYPE_CHECKING:  # imported where used: the model layer is only needed with a ctx
    from ..model.grads import DomainGradRecorder


def zclip(v: np.ndarray, lim: float = 3.0) -> np.ndarray:
    """``clip((v - mean) / std, -lim, lim)`` across entries (0 where the std is 0)."""
    v = np.asarray(v, dtype=np.float64)
    sd = v.std()
    if v.size < 2 or not sd > 0:
        return np.zeros_like(v)
    return np.clip((v - v.mean()) / sd, -lim, lim)


def acodm_rewards(gram: np.ndarray) -> np.ndarray:
    """``clip(zscore(s), -3, 3)``, ``s_k = Σ_{j≠k} G_kj / (mean_k sqrt(G_kk) + 1e-6)``."""
    g = np.asarray(gram, dtype=np.float64)
    off = g - np.diag(np.diag(g))
    norms = np.sqrt(np.maximum(np.diag(g), 0))
    return zclip(off.sum(1) / (norms.mean() + 1e-6))


class ACODM(Controller):
    """AC-ODM; see the module docstring."""

    requires = Requirements(train_losses=True, loss_weighting="token",
                            grads=GradRequest(params=[], returns="vectors"),
                            min_microbatches_per_domain=1, single_domain_microbatches=True)

    def __init__(self, stream: StreamLike, *, total_steps: int, ctx: Any = None,
                 grad_params: Sequence[str] | None = None,
                 norm_params: Sequence[str] | None = None, n_norms: int | None = None,
                 warmup: int | None = None, agent: str | Path | None = None,
                 hidden: int = 1024, layers: int = 4, gamma: float = 0.95, tau: float = 0.001,
                 lr: float = 1e-3, weight_decay: float = 0.1, pool_size: int = 10_000,
                 minibatch: int = 32, smoothing: float = 0.5, noise: float = 1e-3,
                 delta_reference: str = "first", seed: int = 0,
                 observer: Observer | None = None, objective: str = "action_weighted",
                 grad_source: str = "auto", min_weight: float = 0.0) -> None:
        if total_steps < 1:
            raise ValueError(f"AC-ODM needs total_steps >= 1 (for t/T in the state), got "
                             f"{total_steps}")
        if delta_reference not in ("first", "previous"):
            raise ValueError(f"delta_reference must be 'first' or 'previous', got "
                             f"{delta_reference!r}")
        if not 0.0 <= min_weight * max(1, len(stream.domains)) <= 1.0:
            raise ValueError(f"min_weight must be in [0, 1/K], got {min_weight}")
        if grad_source not in ("auto", "backward", "extra"):
            raise ValueError(f"grad_source must be 'auto', 'backward' or 'extra', got "
                             f"{grad_source!r}")
        if ctx is not None and (not grad_params or not norm_params):
            raise ValueError("with a ctx give grad_params (e.g. 3 MLP output matrices) and "
                             "norm_params (the matrices whose norms enter the state)")
        super().__init__(stream, observer=observer)
        self.ctx, self.grad_params = ctx, list(grad_params or [])
        self.norm_params = list(norm_params or [])
        n_l = len(self.norm_params) if self.norm_params else n_norms
        if n_l is None:
            raise ValueError("without a ctx give n_norms (how many norms feedback(norms=) gets)")
        self.L = int(n_l)
        self.total_steps = int(total_steps)
        self.warmup = max(1, round(0.02 * total_steps)) if warmup is None else int(warmup)
        self.minibatch, self.smoothing, self.noise = int(minibatch), float(smoothing), float(noise)
        self.delta_reference = delta_reference
        self.state_dim = 3 * self.K + 2 * self.L + 1
        self.agent = DDPGAgent(self.state_dim, self.K, hidden=hidden, layers=layers, gamma=gamma,
                               tau=tau, lr=lr, weight_decay=weight_decay, objective=objective,
                               seed=seed)
        self.grad_source = grad_source
        self.min_weight = float(min_weight)
        self._recorder: DomainGradRecorder | None = None
        self.proxy = agent is not None
        if self.proxy:
            self.agent.load(torch.load(str(agent), weights_only=True))
        self.pool = ReplayPool(pool_size, self.state_dim, self.K)
        self.rng = np.random.default_rng(seed)
        self.odm_reward = np.zeros(self.K)
        self.last_loss = np.full(self.K, np.nan)
        self.ref_loss: np.ndarray | None = None
        self.ref_norms: np.ndarray | None = None
        self.prev_state: np.ndarray | None = None
        self.prev_action = self._weights.copy()
        self.last_reward: np.ndarray | None = None
        self.losses: dict[str, list[float]] = {"actor": [], "critic": []}
        self._grads: torch.Tensor | None = None
        self._norms: np.ndarray | None = None
        self._dnorms: np.ndarray | None = None
        self._ref_mats: list[torch.Tensor] | None = None

    @property
    def recorder(self) -> DomainGradRecorder:
        """Records per-domain gradients from the trainer's backward passes (needs ``ctx``).

        Wrap each single-domain micro-batch's ``backward()`` in ``with mixer.recorder.record(k):``
        (the forced micro-batches of :class:`~.acodm_batches.ForcedDomainBatches`); ``feedback``
        then uses those gradients instead of an extra forward + K backward passes.
        """
        if self._recorder is None:
            if self.ctx is None:
                raise ValueError("the gradient recorder needs ctx= (the model) and grad_params")
            from ..model.grads import DomainGradRecorder

            self._recorder = DomainGradRecorder(self.ctx.model, self.grad_params, self.K)
        return self._recorder

    # ------------------------------------------------------------------ inputs
    def feedback(self, domain: torch.Tensor | None = None, loss: torch.Tensor | None = None, *,
                 mask: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                 ref_loss: torch.Tensor | None = None, batch: Mapping[str, Any] | None = None,
                 grads: torch.Tensor | None = None,
                 norms: Sequence[float] | np.ndarray | None = None,
                 delta_norms: Sequence[float] | np.ndarray | None = None
                 ) -> dict[str, float] | None:
        """One optimizer step (see the module docstring for ``batch`` / ``grads`` / ``norms``)."""
        if domain is None and batch is not None:
            domain = batch["domain"]
        need_grads = not self.proxy
        if self.ctx is not None:
            if batch is None:
                raise ValueError("AC-ODM with a ctx needs feedback(..., batch=batch)")
            recorded = self._recorder is not None and self._recorder.recorded > 0
            if need_grads and (recorded or self.grad_source == "backward"):
                if not recorded:
                    raise ValueError("AC-ODM grad_source='backward' but nothing was recorded "
                                     "this step; wrap each single-domain micro-batch's "
                                     "backward in `with mixer.recorder.record(k):`")
                g, c = self.recorder.collect()
                grads, counts = g.detach().double().cpu(), c.double()
            elif need_grads:
                dg = self.ctx.domain_grads(batch, self.grad_params)
                grads, counts = dg.grads.detach().double().cpu(), dg.counts.double()
            elif recorded:  # proxy mode: no rewards; drop what was recorded
                self.recorder.collect()
            from ..model.params import select_params

            mats = [p.detach() for _, p in select_params(self.ctx.model, self.norm_params)]
            if self._ref_mats is None:
                self._ref_mats = [m.clone() for m in mats]
            norms = [float(m.double().norm()) for m in mats]
            delta_norms = [float((m - r).double().norm()) for m, r in zip(mats, self._ref_mats)]
            if self.delta_reference == "previous":
                self._ref_mats = [m.clone() for m in mats]
        elif need_grads:
            if grads is None:
                raise ValueError("AC-ODM needs per-domain gradients: pass ctx= at construction "
                                 "or feedback(..., grads=[K, P])")
            grads = torch.as_tensor(grads, dtype=torch.float64).cpu()
            counts = torch.bincount(torch.as_tensor(domain).reshape(-1).long().cpu(),
                                    minlength=self.K).double()
        if norms is None or len(norms) != self.L:
            raise ValueError(f"AC-ODM needs {self.L} weight norms, got "
                             f"{None if norms is None else len(norms)}")
        self._norms = np.asarray(norms, dtype=np.float64)
        if delta_norms is None:  # no weights at hand: |‖W‖ - ‖W_ref‖| (a lower bound)
            if self.ref_norms is None:
                self.ref_norms = self._norms.copy()
            delta_norms = np.abs(self._norms - self.ref_norms)
            if self.delta_reference == "previous":
                self.ref_norms = self._norms.copy()
        self._dnorms = np.asarray(delta_norms, dtype=np.float64)
        if need_grads:
            assert grads is not None
            if grads.dim() != 2 or grads.shape[0] != self.K:
                raise ValueError(f"grads must be [K={self.K}, P], got {tuple(grads.shape)}")
            # count-weighted mean gradient per domain over all ranks
            summed = all_reduce_sum(torch.cat([grads * counts[:, None], counts[:, None]], 1))
            c = summed[:, -1:]
            self._grads = torch.where(c > 0, summed[:, :-1] / c.clamp_min(1), 0.0)
        return super().feedback(domain, loss, mask=mask, tokens=tokens, ref_loss=ref_loss)

    def build_state(self, fb: StepFeedback, norms: np.ndarray, dnorms: np.ndarray) -> np.ndarray:
        """The state vector; ``dnorms`` = ``‖W_l - W_l^ref‖_F``."""
        loss = fb.tok_mean
        loss = np.where(np.isfinite(loss), loss, self.last_loss)  # absent: previous loss
        fill = float(np.nanmean(loss)) if np.isfinite(loss).any() else 0.0
        loss = np.where(np.isfinite(loss), loss, fill)
        if self.ref_loss is None:
            self.ref_loss = loss.copy()
        dl = loss - self.ref_loss
        if self.delta_reference == "previous":
            self.ref_loss = loss.copy()
        self.last_loss = loss
        return np.concatenate([zclip(loss), zclip(dl), zclip(fb.counts), zclip(norms),
                               zclip(dnorms), [100.0 * fb.step / self.total_steps]])

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        assert self._norms is not None and self._dnorms is not None
        s = self.build_state(fb, self._norms, self._dnorms)
        if not self.proxy:
            assert self._grads is not None
            gram = (self._grads @ self._grads.T).numpy()
            r = acodm_rewards(gram)
            self.last_reward = r
            if self.prev_state is not None:
                self.pool.add(self.prev_state, self.prev_action, r, s)
        t = fb.step
        if t <= self.warmup:
            present = fb.present & (fb.tokens > 0)
            a = self.smoothing
            self.odm_reward[present] = (a * self.odm_reward[present]
                                        + (1 - a) * np.exp(fb.tok_mean[present]))
            action = (odm_weights(self.odm_reward, odm_epsilon(t, self.K))
                      if self.odm_reward.sum() > 0 else self._weights.copy())
            if not self.proxy and self.pool.n:
                self._log(*self.agent.warmup_step(self.pool.sample(self.rng, self.minibatch)))
            if t == self.warmup and not self.proxy:
                self.agent.sync_targets()
        else:
            if not self.proxy and self.pool.n:
                self._log(*self.agent.update(self.pool.sample(self.rng, self.minibatch)))
            mu = self.agent.act(s)
            action = np.maximum(mu - self.rng.random(self.K) * self.noise, 0.0)
            if action.sum() <= 0:
                action = mu
            if self.min_weight > 0:  # floor: (1 - K m) a + m keeps every domain sampled
                action = (1 - self.K * self.min_weight) * action / action.sum() + self.min_weight
        action = action / action.sum()
        self.prev_state, self.prev_action = s, action
        return action

    def _log(self, la: float, lq: float) -> None:
        self.losses["actor"].append(la)
        self.losses["critic"].append(lq)
        del self.losses["actor"][:-100], self.losses["critic"][:-100]

    # ----------------------------------------------------------- proxy mode
    def save_agent(self, path: str | Path) -> None:
        """Write the four networks (no optimiser state) for proxy-mode use on another model."""
        torch.save(self.agent.state(optimisers=False), str(path))

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        def arr(x: np.ndarray | None) -> list | None:
            return None if x is None else np.asarray(x).tolist()
        return {"agent": None if self.proxy else self.agent.state(), "pool": self.pool.state(),
                "rng": self.rng.bit_generator.state, "odm_reward": arr(self.odm_reward),
                "last_loss": [None if not np.isfinite(x) else float(x) for x in self.last_loss],
                "ref_loss": arr(self.ref_loss), "ref_norms": arr(self.ref_norms),
                "prev_state": arr(self.prev_state), "prev_action": arr(self.prev_action),
                "ref_mats": None if self._ref_mats is None else to_b64(self._ref_mats)}

    def _load_state(self, st: Mapping) -> None:
        def arr(x: Any) -> np.ndarray | None:
            return None if x is None else np.asarray(x, dtype=np.float64)
        if st["agent"] is not None:
            self.agent.load(st["agent"])
        self.pool.load(st["pool"])
        self.rng.bit_generator.state = st["rng"]
        self.odm_reward = np.asarray(st["odm_reward"], dtype=np.float64)
        self.last_loss = np.array([np.nan if x is None else x for x in st["last_loss"]])
        self.ref_loss, self.ref_norms = arr(st["ref_loss"]), arr(st["ref_norms"])
        self.prev_state = arr(st["prev_state"])
        pa = arr(st["prev_action"])
        self.prev_action = self._weights.copy() if pa is None else pa
        self._ref_mats = None if st.get("ref_mats") is None else from_b64(st["ref_mats"])
