"""OP-Mix — on-policy mixing with LoRA probes (Hu et al., arXiv 2605.15220); ALGORITHMS.md §2.1.

One decision (:meth:`OPMix.run_phase`), at the start (after a uniform prefix), at scheduled steps
(``phases``) or when domains are added (:meth:`OPMix.add_domains`):

1. freeze a copy ``θ₀`` of the current model;
2. components ``C = [old] + probes``; ``old`` is the current mixture ``w_old`` with a *zero*
   adapter (``pipeline/pretrain.py``: "old" ≙ stay at ``θ₀``); probes are the added domains, or
   every active domain when rebalancing; probe ``d`` trains a LoRA adapter on ``θ₀`` with the data
   mixture ``0.9 δ_d + 0.1 w_old``;
3. ``proxy_count`` candidates ``x ~ Dirichlet(1)`` on the ``|C|``-simplex, each simulated as
   ``θ₀ + Σ_d x_d ΔW_d`` — the merged adapter *deltas* are interpolated, not the LoRA factors;
4. every candidate is evaluated on the validation data of every active domain;
5. per domain ``L_i(x) = exp(c_i) + exp(t_i·x)``; the mixture minimises
   ``mean_i exp(t_i·x) + λ KL(E x ‖ q)`` (:mod:`.opmix_fit`);
6. ``w[d] = x_old w_old[d] + x_d`` is pushed; the trainer keeps training its *full* model (never a
   merged one) on it — the trainer's model is not modified by the phase.

Data: ``train_batches(mixture: dict[str, float]) -> iterable of batches`` (e.g. a MixLoader on a
fresh ``MixStream`` of the same shards with those weights) and ``val_batches``
``{domain: iterable of batches}``. Budget: :meth:`OPMix.budget` reports probe samples (LoRA
training), evaluation samples and the trainer's samples; ``compute_ratio`` counts a training
sample as 3 forward-equivalents (a LoRA step still back-propagates through the activations,
only the weight-gradient and optimiser work shrink) and an evaluation sample as 1.

Defaults follow the released code (LoRA rank 16, alpha 32, dropout 0.05, ``proxy_count`` 12,
``kl_reg`` 0.05, probe 0.9/0.1, prior uniform over the active domains as in ``pretrain.py``);
``lora_steps`` and ``lora_lr`` must be chosen for the run (released: 0.2 × stage steps, 2 × base
lr). Deviations: the LoRA is :mod:`mixstream.model.lora` (peft-equivalent on ``nn.Linear``), the
fit/solver as documented in :mod:`.opmix_fit`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import Controller, Observer, Requirements, StreamLike
from .feedback import StepFeedback
from .opmix_fit import fit_loglinear, propose_kl
from .simplex import as_vector, normalise, to_dict

Batches = Iterable[Mapping[str, Any]]


def _count(batches: Batches, counter: list[int]) -> Iterator[Mapping[str, Any]]:
    for b in batches:
        counter[0] += len(b["domain"]) if "domain" in b else 1
        yield b


class OPMix(Controller):
    """On-policy mixing; see the module docstring."""

    requires = Requirements(phase_hook=True, val_losses=True)

    def __init__(self, stream: StreamLike, *, ctx: Any,
                 train_batches: Callable[[dict[str, float]], Batches],
                 val_batches: Mapping[str, Batches], lora_steps: int, lora_lr: float,
                 phases: Sequence[int] = (), targets: str | Sequence[str] | None = None,
                 exclude: str | Sequence[str] = (), rank: int = 16, alpha: float = 32.0,
                 dropout: float = 0.05, proxy_count: int = 12, kl_reg: float = 0.05,
                 probe_weight: float = 0.9, prior: Mapping[str, float] | None = None,
                 fit_steps: int = 30, seed: int = 42, observer: Observer | None = None) -> None:
        if lora_steps < 1 or not lora_lr > 0 or proxy_count < 2:
            raise ValueError(f"OP-Mix needs lora_steps >= 1, lora_lr > 0 and proxy_count >= 2, "
                             f"got {lora_steps}, {lora_lr}, {proxy_count}")
        super().__init__(stream, observer=observer)
        self.ctx, self.train_batches, self.val_batches = ctx, train_batches, dict(val_batches)
        self.lora = {"targets": targets, "exclude": exclude, "rank": rank, "alpha": alpha,
                     "dropout": dropout}
        self.lora_steps, self.lora_lr = int(lora_steps), float(lora_lr)
        self.phases = sorted(int(p) for p in phases)
        self.proxy_count, self.kl_reg, self.probe_weight = int(proxy_count), float(kl_reg), \
            float(probe_weight)
        self.prior = None if prior is None else as_vector(prior, self.domains, "OP-Mix prior")
        self.fit_steps, self.seed = int(fit_steps), int(seed)
        self.decisions: list[dict[str, Any]] = []
        self.probe_samples = 0
        self.eval_samples = 0

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        return None

    def feedback(self, domain: torch.Tensor | None = None, loss: torch.Tensor | None = None,
                 **kwargs: Any) -> dict[str, float] | None:
        """Counts steps; runs a decision when the step count reaches one of ``phases``."""
        pushed = super().feedback(domain, loss, **kwargs)
        if self.step in self.phases:
            pushed = self.run_phase() or pushed
        return pushed

    def add_domains(self, names: Sequence[str]) -> dict[str, float] | None:
        """Bring zero-weight domains into the mixture by an OP-Mix decision (expansion)."""
        bad = [d for d in names if d not in self.domains]
        if bad or not names:
            raise ValueError(f"unknown domain(s) {bad}; known: {self.domains}")
        return self.run_phase(new=list(names))

    def run_phase(self, ctx: Any = None, new: Sequence[str] | None = None  # type: ignore[override]
                  ) -> dict[str, float] | None:
        """One OP-Mix decision; returns the pushed weights (None if unchanged)."""
        ctx = self.ctx if ctx is None else ctx
        w_old = self._weights.copy()
        active = [d for d, w in zip(self.domains, w_old) if w > 0]
        probes = list(new) if new is not None else list(active)
        evals = sorted(set(active) | set(probes), key=self.domains.index)
        comps = ["old"] + probes
        base = ctx.clone(frozen=True)
        adapters = []
        for j, d in enumerate(probes):
            mix = (1 - self.probe_weight) * w_old
            mix[self.domains.index(d)] += self.probe_weight
            counter = [0]
            adapter = ctx.lora(base=base, seed=self.seed + j, **self.lora)
            ctx.train_lora(adapter, _count(self.train_batches(to_dict(mix / mix.sum(),
                                                                       self.domains)), counter),
                           self.lora_steps, self.lora_lr)
            self.probe_samples += counter[0]
            adapters.append(adapter)
        rng = np.random.default_rng(self.seed + len(self.decisions))
        xs = rng.dirichlet(np.ones(len(comps)), size=self.proxy_count)
        table = []
        for x in xs:
            counter = [0]
            val = {d: _count(self.val_batches[d], counter) for d in evals}
            with ctx.applied(ctx.merge(adapters, x[1:].tolist()), base):
                losses = ctx.val_losses(val, model=base)
            self.eval_samples += counter[0]
            table.append([losses[d] for d in evals])
        y = np.asarray(table)
        laws = [fit_loglinear(xs, y[:, i], comps.index(d) if d in comps else None,
                              max_step=self.fit_steps, seed=self.seed)
                for i, d in enumerate(evals)]
        expand = np.zeros((self.K, len(comps)))
        expand[:, 0] = w_old
        for j, d in enumerate(probes, start=1):
            expand[self.domains.index(d), j] = 1.0
        keep = [self.domains.index(d) for d in evals]
        q = (np.ones(len(keep)) if self.prior is None else self.prior[keep])
        x = propose_kl(np.stack([law.t for law in laws]), expand[keep], q, self.kl_reg)
        w = normalise(np.maximum(expand @ x, 0))
        self.decisions.append({
            "step": self.step, "components": comps, "evals": evals, "x": x.tolist(),
            "weights": w.tolist(), "candidates": xs.tolist(), "val_losses": y.tolist(),
            "laws": [{"c": law.c, "t": law.t.tolist(), "loss": law.loss} for law in laws]})
        return self._push(w)

    def budget(self) -> dict[str, float]:
        """Side compute of all decisions next to the training run so far."""
        train = int(self.stream.consumed_samples)
        side = 3.0 * self.probe_samples + self.eval_samples
        return {"probe_train_samples": self.probe_samples, "eval_samples": self.eval_samples,
                "train_samples": train, "decisions": len(self.decisions),
                "compute_ratio": side / (3.0 * train) if train else float("inf")}

    def _state(self) -> dict:
        return {"decisions": self.decisions, "probe_samples": self.probe_samples,
                "eval_samples": self.eval_samples}

    def _load_state(self, state: Mapping) -> None:
        self.decisions = list(state["decisions"])
        self.probe_samples = int(state["probe_samples"])
        self.eval_samples = int(state["eval_samples"])
