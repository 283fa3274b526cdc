"""FastMix — mixture search by hypergradient descent on a proxy (Tan et al., ICLR 2026).

docs/methods/fastmix.md, following hrtan/fastmix ``pretrain/train_fastmix_val.py``. The proxy is
trained with *uniform* source sampling and per-sample loss weights ``p = softmax(z)``
(:meth:`FastMix.weighted_loss`, self-normalised per micro-batch as the released
``FusedCrossEntropyLoss``). Every ``every`` steps the LM-head gradients give::

    a_k     = <g_val, g_k>          g_k: grad of the mean loss of source k's samples in the batch
                                    (a_k = 0 when k is absent), g_val: grad on a validation batch
    dL/dz_j = -eta * p_j (a_j - sum_k p_k a_k)  +  lam * dH/dz_j,   H = -sum p log p
    z      <- Adam(z, dL/dz)        (betas (0.9, 0.95), eps 1e-8, no weight decay)

``final_weights()`` (the last ``p``) is the sampling mixture for the target run.

Defaults: ``every=5``, ``lr=0.05``. Adam moves each ``z_k`` by at most about ``lr`` per outer
update, so ``lr x outer updates`` bounds how far the log-weights can travel; the released
``every=20, lr=0.01`` (:func:`fastmix_preset` ``"released_pretrain"``) assumes proxy runs of
10^4+ steps and, on a 300-step run (15 outer updates, |Δz| <= 0.15), leaves the weights
almost uniform. ``"sft"`` is the post-training search of ``train_fastmix_sft.py`` (target: a
supervised Q/A set with the question tokens masked in ``loss_fn``; Adam betas (0.5, 0.999),
cosine decay of the z learning rate, an outer update every 10 steps, the target gradient
averaged over *all* target batches).

Targets: ``val_batches`` is one target set (an iterable of batches, need not be a training
domain) or ``{name: batches}`` several named target sets, combined as
``g_val = Σ_t w_t g_t`` with ``target_weights`` (default equal).

Modes. ``apply_to="loss"`` (the paper's procedure): sampling stays uniform (pushed at
construction), ``p`` are loss weights. ``apply_to="sampling"``: ``p`` is pushed to the stream as
the sampling mixture after every outer step and the loss is unweighted. The paper's equivalence
``E_{x~sum_k p_k D_k} l(x) = K E_{k~U}[p_k E_{D_k} l]`` makes both optimise the same objective in
expectation; the sampling mode has lower-variance gradients for heavy sources but sees rare
sources less often (so their ``a_k`` is more often 0), the loss mode keeps every source visible.

Inputs. Give a :class:`~mixstream.model.ModelContext` and ``val_batches`` and pass ``batch=``
to :meth:`feedback` (the controller computes ``a`` with ``ctx.grad_gram(batch, params,
reference=val)``), or compute ``a`` yourself and call :meth:`observe_gradients`. Under
torch.distributed ``a`` and the presence counts are all-reduced (mean of ``a`` over ranks that
saw the source) before the update, so ``z`` is identical on every rank.

Deviations from the released code: the val variant averages the gradients of one validation
micro-batch per validation loader; here ``val_per_update`` batches (default 1) of each target
set per outer step, cycling through them (``None``: all of them, the SFT variant). The
gradient signal is taken after ``optimizer.step()`` on the step's batch (θ_{t+1}; released:
θ_t, before the step). The cosine schedule on z runs over ``total_steps`` trainer steps. ``eta`` (the model learning rate in the hypergradient) is passed by the trainer
(``lr=`` in :meth:`feedback`), default 1; Adam makes its scale matter only through ``eps``.
The entropy term keeps the released sign (``lam > 0`` *lowers* entropy; use ``lam < 0`` to
regularise towards uniform).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..feedback import StepFeedback, all_reduce_sum
from .base import Controller, GradRequest, Observer, Requirements, StreamLike
from .loss_weights import element_weights
from .simplex import to_dict

PRESETS: dict[str, dict[str, Any]] = {
    # pretrain/train_fastmix_val.py + configs/pile.yaml + scripts/run_val.sh
    "released_pretrain": {"every": 20, "lr": 0.01, "betas": (0.9, 0.95), "eps": 1e-8,
                          "lr_schedule": "constant", "val_per_update": 1},
    # pretrain/train_fastmix_sft.py + scripts/run_sft.sh (post-training search)
    "sft": {"every": 10, "lr": 0.01, "betas": (0.5, 0.999), "eps": 1e-8,
            "lr_schedule": "cosine", "val_per_update": None},
}


def fastmix_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor keyword arguments of a documented FastMix setting (see the module docstring):
    ``"released_pretrain"`` or ``"sft"`` (needs ``total_steps=`` for its cosine schedule).
    Usage: ``FastMix(stream, ctx=ctx, val_batches=sft_batches, **fastmix_preset("sft",
    total_steps=500))``."""
    if name not in PRESETS:
        raise ValueError(f"unknown FastMix preset {name!r}; known: {sorted(PRESETS)}")
    return {**PRESETS[name], **overrides}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def fastmix_hypergrad(z: np.ndarray, a: np.ndarray, eta: float = 1.0,
                      entropy_reg: float = 0.0) -> np.ndarray:
    """``dL/dz = -eta p (a - p·a) + lam dH/dz`` (``compute_dataset_probs_gradient``)."""
    p = softmax(z)
    g = -eta * p * (a - p @ a)
    if entropy_reg:
        logp = np.log(np.maximum(p, 1e-300))
        g = g + entropy_reg * (-p * (logp - p @ logp))
    return g


class Adam:
    """A float64 numpy Adam (torch.optim.Adam semantics, no weight decay); state is JSON-able."""

    def __init__(self, n: int, lr: float, betas: tuple[float, float], eps: float) -> None:
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.m, self.v, self.t = np.zeros(n), np.zeros(n), 0

    def step(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        b1, b2 = self.betas
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        mhat = self.m / (1 - b1 ** self.t)
        denom = np.sqrt(self.v) / np.sqrt(1 - b2 ** self.t) + self.eps
        return x - self.lr * mhat / denom

    def state(self) -> dict:
        return {"m": self.m.tolist(), "v": self.v.tolist(), "t": self.t}

    def load(self, s: Mapping) -> None:
        self.m = np.asarray(s["m"], dtype=np.float64)
        self.v = np.asarray(s["v"], dtype=np.float64)
        self.t = int(s["t"])


class FastMix(Controller):
    """FastMix proxy search: loss weights ``softmax(z)`` now, ``final_weights()`` for the target."""

    requires = Requirements(train_losses=False, grads=GradRequest("lm_head", with_val=True,
                                                                  every=20),
                            outputs_loss_weights=True)

    def __init__(self, stream: StreamLike, *, ctx: Any = None,
                 val_batches: Iterable[Mapping[str, Any]] | Mapping[str, Iterable[Any]]
                 | None = None,
                 params: str | list[str] = "lm_head", every: int = 5, lr: float = 0.05,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 entropy_reg: float = 0.0, apply_to: str = "loss",
                 observer: Observer | None = None,
                 target_weights: Mapping[str, float] | None = None,
                 val_per_update: int | None = 1, lr_schedule: str = "constant",
                 total_steps: int | None = None) -> None:
        if every < 1 or not lr > 0:
            raise ValueError(f"FastMix needs every >= 1 and lr > 0, got {every}, {lr}")
        if apply_to not in ("loss", "sampling"):
            raise ValueError(f"apply_to must be 'loss' or 'sampling', got {apply_to!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if lr_schedule == "cosine" and (total_steps is None or total_steps < 1):
            raise ValueError("lr_schedule='cosine' needs total_steps (trainer steps) >= 1")
        if val_per_update is not None and val_per_update < 1:
            raise ValueError(f"val_per_update must be >= 1 or None (all), got {val_per_update}")
        if (ctx is None) != (val_batches is None):
            raise ValueError("give both ctx (a ModelContext) and val_batches, or neither (then "
                             "call observe_gradients yourself)")
        super().__init__(stream, observer=observer)
        self.ctx, self.params, self.every = ctx, params, int(every)
        self.apply_to, self.entropy_reg = apply_to, float(entropy_reg)
        self.base_lr, self.lr_schedule = float(lr), lr_schedule
        self.total_steps = None if total_steps is None else int(total_steps)
        self.val_per_update = val_per_update
        sets: dict[str, list[Any]] = {}
        if isinstance(val_batches, Mapping):
            sets = {str(k): list(v) for k, v in val_batches.items()}
        elif val_batches is not None:
            sets = {"": list(val_batches)}
        if ctx is not None and (not sets or any(not v for v in sets.values())):
            raise ValueError("val_batches is empty; FastMix needs a validation/target batch")
        if target_weights is not None:
            unknown = [k for k in target_weights if k not in sets]
            if unknown:
                raise ValueError(f"target_weights for {unknown}, which are not among the "
                                 f"val_batches sets {list(sets)}")
        tw = {k: (1.0 if target_weights is None else float(target_weights.get(k, 0.0)))
              for k in sets}
        if sets and (any(not np.isfinite(v) or v < 0 for v in tw.values())
                     or sum(tw.values()) <= 0):
            raise ValueError(f"target_weights must be >= 0 and not all 0, got {tw}")
        self._sets, self._tw = sets, tw
        self._cursor = {k: 0 for k in sets}
        self.val_used = 0
        self.z = np.ones(self.K)  # released init: ones (uniform p)
        self.opt = Adam(self.K, lr, betas, eps)
        self.outer_steps = 0
        self.history: list[list[float]] = []
        self._push(np.full(self.K, 1.0 / self.K))  # uniform sampling during the search

    # ----------------------------------------------------------------- outputs
    @property
    def probs(self) -> np.ndarray:
        return softmax(self.z)

    def loss_weights(self) -> dict[str, float] | None:
        return to_dict(self.probs, self.domains) if self.apply_to == "loss" else None

    def final_weights(self) -> dict[str, float]:
        """The last ``p = softmax(z)``: the mixture FastMix proposes for the target run."""
        return to_dict(self.probs, self.domains)

    def weighted_loss(self, domain: torch.Tensor, loss: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ_i Σ_tok p_k(i) l / Σ_i Σ_tok p_k(i)`` (per-token ``[B, T]`` or per-sequence ``[B]``);
        the plain mean in ``apply_to="sampling"`` mode."""
        p = self.probs if self.apply_to == "loss" else np.ones(self.K)
        w = element_weights(p, domain, loss, mask)
        return (loss * w).sum() / w.sum().clamp_min(1e-12)

    # ------------------------------------------------------------------ inputs
    def feedback(self, domain: torch.Tensor | None = None, loss: torch.Tensor | None = None, *,
                 mask: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                 ref_loss: torch.Tensor | None = None, batch: Mapping[str, Any] | None = None,
                 lr: float = 1.0) -> dict[str, float] | None:
        """One step; with a ctx, every ``every`` steps pass ``batch=`` (the step's batch) and
        optionally ``lr=`` (the model's current learning rate, eta)."""
        if domain is None and batch is not None:
            domain = batch["domain"]
        pushed = super().feedback(domain, loss, mask=mask, tokens=tokens, ref_loss=ref_loss)
        if self.ctx is not None and self.step % self.every == 0:
            if batch is None:
                raise ValueError("FastMix with a ctx needs feedback(..., batch=batch) on outer "
                                 "steps")
            dg = self.ctx.domain_grads(batch, self.params)
            a = dg.grads @ self._target_grad().to(dg.grads.device, dg.grads.dtype)
            self.val_used += 1
            pushed = self.observe_gradients({"ref": a, "present": dg.present,
                                             "lr": lr}) or pushed
        return pushed

    def _target_grad(self) -> torch.Tensor:
        """``Σ_t w_t mean_b g_t(b)`` over the next ``val_per_update`` batches of each set."""
        from ..model.grads import reference_grad  # the model layer is needed only with a ctx

        total: torch.Tensor | None = None
        wsum = sum(self._tw.values())
        for name, batches in self._sets.items():
            w = self._tw[name] / wsum
            if w == 0:
                continue
            n = len(batches) if self.val_per_update is None else self.val_per_update
            g: torch.Tensor | None = None
            for _ in range(n):
                b = batches[self._cursor[name] % len(batches)]
                self._cursor[name] += 1
                gb, _ = reference_grad(self.ctx.model, self.ctx.loss_fn, b, self.params)
                g = gb if g is None else g + gb
            assert g is not None
            total = w * g / n if total is None else total + w * g / n
        assert total is not None
        return total

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        return None  # z only moves in observe_gradients

    def observe_gradients(self, stats: Mapping[str, Any]) -> dict[str, float] | None:  # type: ignore[override]
        """``stats``: ``ref`` [K] = ⟨g_val, g_k⟩ (this rank), ``present`` bool [K], ``lr`` (eta).

        All-reduced here: ``a_k`` = mean over the ranks where source ``k`` was present.
        """
        a = torch.as_tensor(stats["ref"], dtype=torch.float64).reshape(-1).cpu()
        pres = torch.as_tensor(stats["present"]).reshape(-1).to(torch.float64).cpu()
        if a.numel() != self.K or pres.numel() != self.K:
            raise ValueError(f"FastMix gradient stats need {self.K} values, got {a.numel()}")
        a = torch.where(pres > 0, a, torch.zeros_like(a))
        sums = all_reduce_sum(torch.stack([a * pres, pres]))
        av = np.divide(sums[0].numpy(), sums[1].numpy(), out=np.zeros(self.K),
                       where=sums[1].numpy() > 0)
        if not np.all(np.isfinite(av)):
            raise ValueError(f"non-finite FastMix inner products {av.tolist()}")
        g = fastmix_hypergrad(self.z, av, float(stats.get("lr", 1.0)), self.entropy_reg)
        if self.lr_schedule == "cosine":
            assert self.total_steps is not None
            frac = min(self.step, self.total_steps) / self.total_steps
            self.opt.lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * frac))
        self.z = self.opt.step(self.z, g)
        self.outer_steps += 1
        self.history.append(self.probs.tolist())
        if self.observer is not None:
            self.observer.on_weights(self.step, self.stream.consumed_samples,
                                     self.final_weights(), kind="loss")
        return self._push(self.probs) if self.apply_to == "sampling" else None

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        return {"z": self.z.tolist(), "adam": self.opt.state(), "outer_steps": self.outer_steps,
                "val_used": self.val_used, "val_cursor": dict(self._cursor),
                "history": self.history}

    def _load_state(self, state: Mapping) -> None:
        self.z = np.asarray(state["z"], dtype=np.float64)
        self.opt.load(state["adam"])
        self.outer_steps = int(state["outer_steps"])
        self.history = [list(h) for h in state["history"]]
        self.val_used = int(state["val_used"])
        cur = state.get("val_cursor")
        if cur is None:  # older checkpoints: one batch of the single set per outer step
            cur = {k: self.val_used for k in self._sets}
        self._cursor = {k: int(cur.get(k, 0)) for k in self._sets}

