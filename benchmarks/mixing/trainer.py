"""One training run of the micro model on a MixStream, with an optional controller.

Paired seeds: ``seed`` fixes the model init (``torch.manual_seed``) and the stream's sampling
seed, so every method of a seed starts from the same weights and draws from the same per-domain
orders. The learning rate warms up for 5 % of the steps and decays (cosine) to 10 % — without a
decay the final loss reflects the last few batches' noise more than the mixture.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mixstream import MixLoader, MixStream

from .model import MicroLM, eval_loss, token_losses
from .problem import Mixture, Problem, Schedule


class Hooks:
    """Per-method plumbing; the defaults are a plain run."""

    def make(self, stream: MixStream, model: nn.Module) -> Any:
        """The controller (or None); created after the loader, before the first batch."""
        return None

    def loss(self, ctrl: Any, dom: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        return tok.mean()

    def extra_batches(self) -> list[dict[str, Any]]:
        """Batches trained on in addition to the stream's (AC-ODM's forced single-domain ones)."""
        return []

    def backward(self, ctrl: Any, model: nn.Module, parts: list[tuple[dict, torch.Tensor]],
                 total: torch.Tensor) -> None:
        total.backward()

    def after(self, ctrl: Any, step: int, batch: dict[str, Any], dom: torch.Tensor,
              tok: torch.Tensor, lr: float) -> None:
        if ctrl is not None:
            ctrl.feedback(dom, tok.mean(1).detach())


@dataclass
class RunOut:
    test: dict[str, float]
    dev: dict[str, float]
    weights: np.ndarray            # [steps, K] realised stream weights after each step
    seconds: float
    model: nn.Module
    ctrl: Any = None
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, dev losses)


def lr_at(step: int, steps: int, lr: float, const: bool = False) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    if const:
        return lr
    p = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def new_model(p: Problem, seed: int) -> MicroLM:
    torch.manual_seed(seed)
    return MicroLM(p.model)


def evaluate(model: nn.Module, sets: dict[str, torch.Tensor]) -> dict[str, float]:
    return {n: eval_loss(model, rows) for n, rows in sets.items()}


def train(p: Problem, seed: int, *, schedule: Schedule | None = None, hooks: Hooks | None = None,
          steps: int | None = None, const_lr: bool = False, curve_every: int = 0,
          model: nn.Module | None = None, eval_sets: bool = True) -> RunOut:
    """Train a fresh model (or ``model``) for ``steps`` (default ``p.steps``) steps."""
    hooks = hooks or Hooks()
    steps = steps or p.steps
    t0 = time.perf_counter()
    if model is None:
        model = new_model(p, seed)
        if p.init_state is not None:
            model.load_state_dict(p.init_state[str(seed)])  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = list(schedule or [(0, p.uniform())])
    stream = MixStream(p.shard_dirs, weights=_full(p, sched[0][1]), seed=seed)
    loader = MixLoader(stream, batch_size=p.batch)
    ctrl = hooks.make(stream, model)
    it: Iterator[dict[str, Any]] = iter(loader)
    wlog = np.zeros((steps, p.K))
    curve: list[tuple[int, dict[str, float]]] = []
    nxt = 1
    for step in range(steps):
        if nxt < len(sched) and step == sched[nxt][0]:
            stream.set_weights(_full(p, sched[nxt][1]))
            nxt += 1
        lr = lr_at(step, steps, p.lr, const_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = next(it)
        parts = [batch] + hooks.extra_batches()
        outs = []
        for b in parts:
            rows = torch.as_tensor(b["input_ids"]).long()
            outs.append((b, token_losses(model, rows)))
        dom = torch.cat([torch.as_tensor(b["domain"]).long() for b, _ in outs])
        tok = torch.cat([t for _, t in outs])
        loss = hooks.loss(ctrl, dom, tok)
        opt.zero_grad(set_to_none=True)
        hooks.backward(ctrl, model, outs, loss)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        full = batch if len(parts) == 1 else _concat(parts)
        hooks.after(ctrl, step + 1, full, dom, tok.detach(), lr)
        w = stream.weights
        wlog[step] = [w[d] for d in p.domains]
        if curve_every and ((step + 1) % curve_every == 0 or step + 1 == steps):
            curve.append((step + 1, evaluate(model, {n: p.dev[n] for n in p.target})))
    test = evaluate(model, p.test) if eval_sets else {}
    dev = evaluate(model, p.dev) if eval_sets else {}
    return RunOut(test, dev, wlog, time.perf_counter() - t0, model, ctrl, curve)


def _full(p: Problem, mix: Mixture) -> dict[str, float]:
    w = {d: float(mix.get(d, 0.0)) for d in p.domains}
    s = sum(w.values())
    return {d: v / s for d, v in w.items()}


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"input_ids": torch.cat([torch.as_tensor(b["input_ids"]) for b in parts]),
            "domain": torch.cat([torch.as_tensor(b["domain"]).long() for b in parts])}
