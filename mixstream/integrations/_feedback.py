"""What both trainer integrations share: find the controllers, collect one optimizer step's
per-sequence losses, hand them over after the step.

A trainer calls the model once per micro-batch and the optimizer once per ``k`` micro-batches
(gradient accumulation). Controllers are defined per optimizer step (``feedback`` once per
step, on every rank), so the losses of the ``k`` micro-batches are kept here and given to every
controller in one call after ``optimizer.step()``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..controllers.base import Controller


def controllers(stream: Any) -> list[Controller]:
    """The controllers attached to ``stream`` (controllers attach themselves on construction)."""
    return [obj for obj in stream.attached.values() if isinstance(obj, Controller)]


def check_supported(ctrl: Controller, trainer: str) -> None:
    """Refuse a controller whose needs this integration does not meet (never run it silently
    without them)."""
    req = ctrl.requires
    name = type(ctrl).__name__
    missing = []
    if req.ref_losses:
        missing.append("reference-model losses (ref_losses)")
    if req.outputs_loss_weights:
        missing.append("per-domain loss weights applied to the training loss "
                       "(outputs_loss_weights)")
    if req.single_domain_microbatches or req.min_microbatches_per_domain:
        missing.append("single-domain micro-batches")
    if req.val_losses and getattr(ctrl, "validate", None) is None:
        missing.append("validation losses: create the controller with validate=...")
    if missing:
        raise ValueError(f"{name} needs {', '.join(missing)}, which the {trainer} integration "
                         f"does not provide; drive it from a plain loop (examples/train_loop.py) "
                         f"or call its methods yourself")


class StepLosses:
    """Per-sequence losses of the micro-batches of one optimizer step."""

    def __init__(self) -> None:
        self._domain: list[torch.Tensor] = []
        self._loss: list[torch.Tensor] = []
        self._tokens: list[torch.Tensor] = []
        self._lossless = False  # domain ids only (controllers that need no losses)

    def add_domains(self, domain: torch.Tensor) -> None:
        """A micro-batch without losses: the controllers only count its sequences."""
        if self._loss:
            raise ValueError("some micro-batches of this step came with losses and some without")
        self._lossless = True
        self._domain.append(torch.as_tensor(domain).reshape(-1))

    def __len__(self) -> int:
        return sum(int(d.numel()) for d in self._domain)

    def add(self, domain: torch.Tensor, loss: torch.Tensor, tokens: torch.Tensor) -> None:
        """``domain`` [B] ids, ``loss`` [B] mean loss over each sequence's counted targets,
        ``tokens`` [B] counted targets (0: the sequence has no target and is left out)."""
        if self._lossless:
            raise ValueError("some micro-batches of this step came with losses and some without")
        domain = torch.as_tensor(domain).reshape(-1)
        loss = loss.detach().reshape(-1)
        tokens = torch.as_tensor(tokens).reshape(-1)
        if not (domain.numel() == loss.numel() == tokens.numel()):
            raise ValueError(f"{domain.numel()} domain ids, {loss.numel()} losses and "
                             f"{tokens.numel()} token counts: one of each per sequence")
        keep = tokens > 0  # no counted target: no loss to report (not a loss of 0)
        self._domain.append(domain[keep].to(loss.device))
        self._loss.append(loss[keep])
        self._tokens.append(tokens[keep].to(loss.device))

    def flush(self, ctrls: list[Controller]) -> None:
        """Give the collected step to every controller (on every rank: ``feedback``
        all-reduces), then start the next step."""
        if self._lossless:
            domain = torch.cat(self._domain)
            self._domain, self._lossless = [], False
            for ctrl in ctrls:
                ctrl.feedback(domain)
            return
        if self._domain:
            domain = torch.cat(self._domain)
            loss = torch.cat(self._loss)
            tokens = torch.cat(self._tokens)
        else:  # a rank without sequences this step still joins the all-reduce
            domain = torch.zeros(0, dtype=torch.long)
            loss = torch.zeros(0)
            tokens = torch.zeros(0, dtype=torch.long)
        self._domain, self._loss, self._tokens = [], [], []
        for ctrl in ctrls:
            # [B] losses + [B] token counts: the per-domain sums hold both the sequence-weighted
            # and the token-weighted mean exactly; each controller reads the one it declares
            ctrl.feedback(domain, loss, tokens=tokens)
