"""Merging adapters: weighted sums of their weight deltas, applied to a model.

OP-Mix simulates a mixture ``w`` with ``θ(w) = θ₀ + Σ_c w_c ΔW_c`` where ``ΔW_c = scaling·B_c A_c``
is adapter ``c``'s merged weight change. The deltas are interpolated, not the factors: mixing
``B`` and ``A`` separately gives ``(Σ w B)(Σ w A) ≠ Σ w (B A)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from mixstream.model.lora import LoRAAdapter

Deltas = dict[str, torch.Tensor]


def merge_adapters(adapters: Sequence[LoRAAdapter], coefficients: Sequence[float]) -> Deltas:
    """``Σ_c coefficients[c] · adapters[c].deltas()`` (parameter name -> tensor)."""
    if len(adapters) == 0 or len(adapters) != len(coefficients):
        raise ValueError(f"need one coefficient per adapter, got {len(coefficients)} coefficients "
                         f"for {len(adapters)} adapters")
    coefs = [float(c) for c in coefficients]
    if not all(math.isfinite(c) for c in coefs):
        raise ValueError(f"coefficients must be finite, got {coefs}")
    out: Deltas = {}
    for adapter, c in zip(adapters, coefs):
        for name, d in adapter.deltas().items():
            out[name] = out[name] + c * d if name in out else c * d
    return out


def _targets(model: nn.Module, deltas: Mapping[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    for name, d in deltas.items():
        if name not in params:
            raise ValueError(f"delta for {name!r}, which is not a parameter of the model")
        if params[name].shape != d.shape:
            raise ValueError(f"delta for {name!r} has shape {tuple(d.shape)}, the parameter "
                             f"{tuple(params[name].shape)}")
    return {n: params[n] for n in deltas}


@contextmanager
def applied(model: nn.Module, deltas: Mapping[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Within the block ``model`` has ``deltas`` added to its weights; exact values restored after."""
    targets = _targets(model, deltas)
    saved = {n: p.detach().clone() for n, p in targets.items()}
    try:
        with torch.no_grad():
            for n, p in targets.items():
                p.add_(deltas[n].to(device=p.device, dtype=p.dtype))
        yield model
    finally:
        with torch.no_grad():
            for n, p in targets.items():
                p.copy_(saved[n])


def merged_copy(model: nn.Module, deltas: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` with ``deltas`` added to its weights."""
    out = copy.deepcopy(model)
    targets = _targets(out, deltas)
    with torch.no_grad():
        for n, p in targets.items():
            p.add_(deltas[n].to(device=p.device, dtype=p.dtype))
    return out
