"""Training and evaluation steps of the demo, written the way a user's loop would be."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..controllers.base import Controller
from .model import token_losses

TOKENS = "input_ids"


def sequence_loss(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """Mean next-token loss per sequence ``[B]`` (the validation ``loss_fn``)."""
    return token_losses(model, torch.as_tensor(batch[TOKENS])).mean(1)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Mapping[str, Any],
               mixer: Controller | None = None, clip: float = 1.0) -> float:
    """One optimizer step; feeds per-sequence losses to ``mixer`` (the one extra line)."""
    model.train()
    tok_loss = token_losses(model, torch.as_tensor(batch[TOKENS]))
    per_seq = tok_loss.mean(1)
    loss = per_seq.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    if mixer is not None:
        dom = torch.as_tensor(batch["domain"])
        if _takes_batch(mixer):
            mixer.feedback(dom, per_seq.detach(), batch=batch)  # type: ignore[call-arg]
        else:
            mixer.feedback(dom, per_seq.detach())
    return float(loss.detach())


def _takes_batch(mixer: Controller) -> bool:
    """Controllers with model access (FastMix, AC-ODM) also need the step's batch."""
    return getattr(mixer, "ctx", None) is not None


@dataclass
class TrainResult:
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def train(model: nn.Module, opt: torch.optim.Optimizer, batches: Iterable[Mapping[str, Any]],
          *, seconds: float | None = None, max_steps: int | None = None,
          mixer: Controller | None = None, lr_schedule: Any = None,
          progress: Any = None) -> TrainResult:
    """Train until ``seconds`` of wall time or ``max_steps`` steps, whichever comes first."""
    if seconds is None and max_steps is None:
        raise ValueError("give a time budget (seconds=) or a step budget (max_steps=)")
    res = TrainResult()
    start = time.perf_counter()
    it: Iterator[Mapping[str, Any]] = iter(batches)
    while True:
        if max_steps is not None and res.steps >= max_steps:
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
        batch = next(it)
        if lr_schedule is not None:
            lr_schedule(opt, res.steps)
        res.losses.append(train_step(model, opt, batch, mixer))
        res.steps += 1
        res.tokens += int(torch.as_tensor(batch[TOKENS]).numel())
        if progress is not None:
            progress(res)
    res.seconds = time.perf_counter() - start
    return res
