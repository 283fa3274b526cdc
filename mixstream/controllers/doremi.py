"""Online DoReMi — Group-DRO on the excess loss over a reference model (Xie et al. 2023).

docs/methods/doremi.md, following sangmichaelxie/doremi ``doremi/trainer.py``. Every step::

    lambda_i = mean over domain-i tokens of max(l_theta(tok) - l_ref(tok), 0)
               (absent domain: previous lambda_i)
    alpha'   = alpha * exp(eta * lambda)
    alpha    = (1 - c) alpha' / sum(alpha') + c / K          (init uniform)

Outputs: per-domain *loss* weights ``w_i ∝ alpha_i / s_i`` (``s`` = the stream's sampling
weights; the proxy is trained with fixed, usually uniform, sampling) applied by
:meth:`DoReMi.weighted_loss`, and the time-averaged ``alpha`` (:meth:`final_weights`) to use as
the sampling mixture of the target run. ``apply_to="sampling"`` instead pushes ``alpha`` to the
stream every step (an online variant, not the paper's proxy procedure; then there are no loss
weights).

Reference losses: pass ``ref_loss=`` to :meth:`feedback`, or give ``reference`` (a model) and
``ref_loss_fn(model, batch) -> per-token (or per-sequence) losses`` and pass ``batch=``.
Defaults ``eta=1``, ``c=1e-3`` as in ``scripts/runs/run_pile_doremi120M.sh``. Clipping is per
token when per-token losses ``[B, T]`` are given (released code); with per-sequence losses it
is necessarily per sequence (a deviation, documented in the feedback docs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist

from ..feedback import StepFeedback, dist_active
from .base import Controller, Observer, Requirements, StreamLike
from .loss_weights import element_weights
from .simplex import to_dict


def train_reference(model: torch.nn.Module,
                    loss_fn: Callable[[torch.nn.Module, Mapping[str, Any]], torch.Tensor],
                    batches: Iterable[Mapping[str, Any]], steps: int, lr: float,
                    weight_decay: float = 0.0) -> torch.nn.Module:
    """A reference model for DoReMi: a copy of ``model`` trained ``steps`` AdamW steps on
    ``batches`` (any data: the training mixture, or a target/dev set that is not a training
    domain; re-iterated when it runs out). ``model`` itself is not changed."""
    from ..model.lora import _batches
    if steps < 1 or not lr > 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got {steps} and {lr}")
    ref = copy.deepcopy(model)
    ref.train()
    opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay)
    with torch.enable_grad():
        for batch in _batches(batches, steps):
            loss = loss_fn(ref, batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return ref.eval()


def doremi_step(alpha: np.ndarray, excess: np.ndarray, eta: float, eps: float) -> np.ndarray:
    """One exponentiated-gradient step with the uniform smoothing ``(1-c) a/Σa + c/K``."""
    with np.errstate(divide="ignore"):
        logits = np.log(alpha) + eta * excess
    a = np.exp(logits - logits.max())
    return (1 - eps) * a / a.sum() + eps / len(a)


class DoReMi(Controller):
    """Online DoReMi on a proxy model: loss weights now, averaged mixture for the target run."""

    requires = Requirements(train_losses=True, ref_losses=True, loss_weighting="token",
                            per_token_losses=True, outputs_loss_weights=True)
    domain_state: ClassVar[Mapping[str, str | float] | None] = {
        "alpha": "mean", "alpha_sum": "mean", "excess": "zero"}

    def __init__(self, stream: StreamLike, *, eta: float = 1.0, eps: float = 1e-3,
                 reference: torch.nn.Module | None = None,
                 ref_loss_fn: Callable[[torch.nn.Module, Mapping[str, Any]], torch.Tensor]
                 | None = None,
                 apply_to: str = "loss", observer: Observer | None = None) -> None:
        if not eta > 0:
            raise ValueError(f"DoReMi eta (step size) must be > 0, got {eta}")
        if not 0 <= eps <= 1:
            raise ValueError(f"DoReMi eps (uniform smoothing) must be in [0, 1], got {eps}")
        if apply_to not in ("loss", "sampling"):
            raise ValueError(f"apply_to must be 'loss' or 'sampling', got {apply_to!r}")
        if (reference is None) != (ref_loss_fn is None):
            raise ValueError("give both reference (model) and ref_loss_fn(model, batch), or neither")
        super().__init__(stream, observer=observer)
        self.eta, self.eps, self.apply_to = float(eta), float(eps), apply_to
        self.reference, self.ref_loss_fn = reference, ref_loss_fn
        self.alpha = np.full(self.K, 1.0 / self.K)
        self.alpha_sum = np.zeros(self.K)
        self.updates = 0
        self.excess = np.zeros(self.K)  # last per-domain score (reused for absent domains)

    def feedback(self, domain: torch.Tensor | None = None, loss: torch.Tensor | None = None, *,
                 mask: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                 ref_loss: torch.Tensor | None = None,
                 batch: Mapping[str, Any] | None = None) -> dict[str, float] | None:
        """As :meth:`Controller.feedback`; with a reference model, pass ``batch=`` instead of
        ``ref_loss=`` (and ``domain`` may be omitted: ``batch["domain"]`` is used)."""
        if ref_loss is None and self.reference is not None:
            if batch is None:
                raise ValueError("DoReMi with a reference model needs feedback(..., batch=batch)")
            assert self.ref_loss_fn is not None
            was_training = self.reference.training
            self.reference.eval()
            with torch.no_grad():
                ref_loss = self.ref_loss_fn(self.reference, batch).detach()
            self.reference.train(was_training)
        if domain is None and batch is not None:
            domain = batch["domain"]
        return super().feedback(domain, loss, mask=mask, tokens=tokens, ref_loss=ref_loss)

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        present = fb.present & (fb.tokens > 0)
        self.excess[present] = fb.excess_mean[present]
        self.alpha = doremi_step(self.alpha, self.excess, self.eta, self.eps)
        self.alpha_sum += self.alpha
        self.updates += 1
        return self.alpha.copy() if self.apply_to == "sampling" else None

    # ---------------------------------------------------------------- outputs
    def domain_weights(self) -> dict[str, float]:
        """The current DoReMi domain weights alpha_t."""
        return to_dict(self.alpha, self.domains)

    def loss_weight_vector(self) -> np.ndarray | None:
        if self.apply_to == "sampling":
            return None
        s = self._weights
        w = np.divide(self.alpha, s, out=np.zeros(self.K), where=s > 0)
        return w / w.sum()

    def loss_weights(self) -> dict[str, float] | None:
        w = self.loss_weight_vector()
        return None if w is None else to_dict(w, self.domains)

    def final_weights(self) -> dict[str, float]:
        """Time-averaged alpha (the mixture DoReMi proposes for the target run)."""
        avg = self.alpha_sum / self.updates if self.updates else self.alpha
        return to_dict(avg / avg.sum(), self.domains)

    def weighted_loss(self, domain: torch.Tensor, loss: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
        """The reweighted training loss ``Σ_tok w_d(tok) l_tok / Σ_tok w_d(tok)``.

        ``loss`` per token ``[B, T]`` (with ``mask``) or per sequence ``[B]``. Under
        torch.distributed the normaliser is summed over ranks and divided by the world size
        (DDP averages gradients), as in the released trainer.
        """
        w = self.loss_weight_vector()
        if w is None:
            raise ValueError("weighted_loss is only defined with apply_to='loss'")
        tok_w = element_weights(w, domain, loss, mask)
        norm = tok_w.detach().sum()
        if dist_active():
            norm = norm.clone()
            dist.all_reduce(norm)
            norm = norm / dist.get_world_size()
        return (loss * tok_w).sum() / norm.clamp_min(1e-10)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        return {"alpha": self.alpha.tolist(), "alpha_sum": self.alpha_sum.tolist(),
                "updates": self.updates, "excess": self.excess.tolist()}

    def _load_state(self, state: Mapping) -> None:
        self.alpha = np.asarray(state["alpha"], dtype=np.float64)
        self.alpha_sum = np.asarray(state["alpha_sum"], dtype=np.float64)
        self.updates = int(state["updates"])
        self.excess = np.asarray(state["excess"], dtype=np.float64)
