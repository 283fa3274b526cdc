"""``ModelContext``: the one door through which model-aware controllers reach the model.

The trainer builds it once from its ``model``, a ``loss_fn(model, batch) -> per-sample loss [B]``
and the domain list, and hands it to controllers that ask for model access (AC-ODM and FastMix:
per-domain gradient inner products; OP-Mix: frozen copies, LoRA probes, merged evaluations).
Nothing else in the training loop changes. Every method leaves the trainer's model as it found
it: parameter values, ``requires_grad`` flags, ``.grad`` tensors and train/eval modes.

Example (OP-Mix style)::

    ctx = ModelContext(model, loss_fn, domains)
    base = ctx.clone(frozen=True)                       # θ₀, shared by all probes
    probes = [ctx.lora(base=base, targets=["att_proj", "ff_proj"]) for _ in domains]
    for probe, stream in zip(probes, probe_streams):
        ctx.train_lora(probe, stream, steps=100, lr=1e-3)
    with ctx.applied(ctx.merge(probes, [0.5, 0.3, 0.2]), base):
        losses = ctx.val_losses(val_batches, model=base)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mixstream.model import grads as _grads
from mixstream.model import merge as _merge
from mixstream.model.grads import DomainGrads, GradGram, ModelInputs, PerSampleLossFn
from mixstream.model.lora import LoRAAdapter, train_lora
from mixstream.model.params import ParamSpec


class ModelContext:
    """Model access for controllers; see the module docstring."""

    def __init__(self, model: nn.Module, loss_fn: PerSampleLossFn, domains: Sequence[str]) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(model, batch) -> losses [B]")
        names = list(domains)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"domains must be a non-empty list of distinct names, got {names}")
        self.model, self.loss_fn, self.domains = model, loss_fn, names

    @property
    def n_domains(self) -> int:
        return len(self.domains)

    def domain_grads(self, batch: ModelInputs, params: ParamSpec = None) -> DomainGrads:
        """Per-domain gradients ``[K, P]`` of the mean loss on ``params`` (default: all trainable)."""
        return _grads.domain_grads(self.model, self.loss_fn, batch, self.n_domains, params)

    def grad_gram(self, batch: ModelInputs, params: ParamSpec = None,
                  reference: ModelInputs | None = None) -> GradGram:
        """Gram matrix ``[K, K]`` of per-domain gradients (absent domains: zero rows, flagged)."""
        return _grads.grad_gram(self.model, self.loss_fn, batch, self.n_domains, params,
                                reference)

    def val_losses(self, batches: Iterable[ModelInputs] | Mapping[str, Iterable[ModelInputs]],
                   model: nn.Module | None = None) -> dict[str, float]:
        """Mean per-sample loss per domain (NaN where no sample), in eval mode, no grad."""
        return _grads.val_losses(self.model if model is None else model, self.loss_fn, batches,
                                 self.domains)

    def clone(self, frozen: bool = False) -> nn.Module:
        """An independent deep copy on the same device; ``frozen`` turns its grads off."""
        out = copy.deepcopy(self.model)
        for p in out.parameters():
            p.grad = None
            if frozen:
                p.requires_grad_(False)
        return out

    def lora(self, targets: str | Sequence[str] | None = None, *, base: nn.Module | None = None,
             exclude: str | Sequence[str] = (), rank: int = 16, alpha: float = 32.0,
             dropout: float = 0.05, seed: int = 0) -> LoRAAdapter:
        """A new LoRA adapter on ``base`` (default: a fresh frozen clone of the model).

        Defaults are OP-Mix's (rank 16, alpha 32, dropout 0.05); ``targets`` name ``nn.Linear``
        modules (all if ``None``). Share one ``base`` between adapters that are merged.
        """
        return LoRAAdapter(self.clone(frozen=True) if base is None else base, targets,
                           exclude=exclude, rank=rank, alpha=alpha, dropout=dropout, seed=seed)

    def train_lora(self, adapter: LoRAAdapter, batches: Iterable[Any], steps: int, lr: float,
                   weight_decay: float = 0.0) -> list[float]:
        """Train ``adapter`` (AdamW) on its frozen base; returns the per-step losses."""
        if adapter.base is self.model:
            raise ValueError("the adapter's base is the trainer's model; build it with "
                             "ctx.lora() or on ctx.clone(frozen=True)")
        return train_lora(adapter, self.loss_fn, batches, steps, lr, weight_decay)

    def merge(self, adapters: Sequence[LoRAAdapter],
              coefficients: Sequence[float]) -> dict[str, torch.Tensor]:
        """``Σ_c w_c ΔW_c`` — weighted sum of the adapters' merged weight deltas."""
        return _merge.merge_adapters(adapters, coefficients)

    @contextmanager
    def applied(self, deltas: Mapping[str, torch.Tensor], model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with ``deltas`` added inside the block (not allowed on the trainer's model)."""
        if model is self.model:
            raise ValueError("apply deltas to a clone (ctx.clone()), not the trainer's model")
        with _merge.applied(model, deltas) as m:
            yield m

    def merged_model(self, deltas: Mapping[str, torch.Tensor],
                     base: nn.Module | None = None) -> nn.Module:
        """A new model: ``base`` (default the trainer's model) plus ``deltas``."""
        return _merge.merged_copy(self.model if base is None else base, deltas)
