"""Per-domain gradients, their inner products, and per-domain validation losses.

The trainer supplies ``loss_fn(model, batch) -> per-sample loss [B]``; ``batch["domain"]`` is a
LongTensor ``[B]`` of indices into the domain list. For every domain ``k`` present in a batch the
gradient ``g_k`` of the *mean* loss over its samples is taken with respect to the chosen
parameters only (``torch.autograd.grad``: the parameters' ``.grad`` and ``requires_grad`` flags
are left as they were). One forward pass, one backward pass per present domain, all on the
model's device; memory is ``K x (elements of the chosen parameters)``, accumulated in at least
float32 (bf16/fp16 gradients are upcast before the inner products).

Absent domains get a zero gradient row (so their inner products are 0, FastMix's rule), a count
of 0, a NaN mean loss, and ``present[k] = False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mixstream.model.params import ParamSpec, requires_grad, select_params, training_mode

#: a batch as the trainer's ``loss_fn`` takes it (a MixStream batch: tensors by name, with
#: ``batch["domain"]``)
ModelInputs = Mapping[str, Any]
#: ``loss_fn(model, batch) -> losses [B]``: one loss per sample (reduced over tokens only)
PerSampleLossFn = Callable[[nn.Module, ModelInputs], torch.Tensor]


def batch_domains(batch: ModelInputs, n_domains: int) -> torch.Tensor:
    """The validated ``batch["domain"]`` (LongTensor ``[B]`` with values in ``[0, n_domains)``)."""
    if "domain" not in batch:
        raise ValueError("batch has no 'domain' entry; MixStream batches carry the domain index "
                         "of every sample in batch['domain']")
    d = batch["domain"]
    if not isinstance(d, torch.Tensor) or d.dim() != 1 or d.dtype not in (
            torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError("batch['domain'] must be a 1-D integer tensor of domain indices")
    if d.numel() and (int(d.min()) < 0 or int(d.max()) >= n_domains):
        raise ValueError(f"batch['domain'] has indices outside [0, {n_domains}) "
                         f"(min {int(d.min())}, max {int(d.max())}) for {n_domains} domains")
    return d.long()


def per_sample_losses(model: nn.Module, loss_fn: PerSampleLossFn, batch: ModelInputs,
                      domains: torch.Tensor) -> torch.Tensor:
    """``loss_fn(model, batch)``, checked to be one finite-shaped loss per sample."""
    losses = loss_fn(model, batch)
    if not isinstance(losses, torch.Tensor) or losses.shape != domains.shape:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"loss_fn must return one loss per sample, shape {tuple(domains.shape)}; "
                         f"got {shape}. Reduce over tokens, not over the batch")
    return losses


@dataclass
class DomainGrads:
    """Flattened per-domain gradients ``[K, P]`` of the chosen parameters (in ``names`` order)."""

    grads: torch.Tensor
    present: torch.Tensor  # bool [K]
    counts: torch.Tensor  # long [K]
    losses: torch.Tensor  # [K] mean loss per domain, NaN if absent
    names: list[str]
    shapes: list[torch.Size]

    def unflatten(self, k: int) -> dict[str, torch.Tensor]:
        """Domain ``k``'s gradient as ``{parameter name: tensor}``."""
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out[name] = self.grads[k, i:i + n].view(shape)
            i += n
        return out


@dataclass
class GradGram:
    """Inner products of per-domain gradients; ``ref`` are products with a reference gradient."""

    gram: torch.Tensor  # [K, K]
    present: torch.Tensor  # bool [K]
    counts: torch.Tensor  # long [K]
    losses: torch.Tensor  # [K]
    ref: torch.Tensor | None = None  # [K] <g_k, g_ref>
    ref_sq: torch.Tensor | None = None  # scalar <g_ref, g_ref>
    ref_loss: float | None = None

    def full(self) -> torch.Tensor:
        """The ``(K+1) x (K+1)`` Gram matrix with the reference gradient last."""
        if self.ref is None or self.ref_sq is None:
            raise ValueError("no reference batch was given; call grad_gram(..., reference=batch)")
        k = self.gram.shape[0]
        out = self.gram.new_zeros(k + 1, k + 1)
        out[:k, :k] = self.gram
        out[:k, k] = out[k, :k] = self.ref
        out[k, k] = self.ref_sq
        return out


def _flat_grad(loss: torch.Tensor, params: list[nn.Parameter], retain: bool) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    flat = []
    for g, p in zip(grads, params):
        v = (torch.zeros_like(p) if g is None else g).reshape(-1)  # unused parameter: zero
        flat.append(v.float() if v.dtype in (torch.float16, torch.bfloat16) else v)
    return torch.cat(flat)


def domain_grads(model: nn.Module, loss_fn: PerSampleLossFn, batch: ModelInputs, n_domains: int,
                 params: ParamSpec = None) -> DomainGrads:
    """Per-domain mean-loss gradients on ``params`` (see the module docstring)."""
    chosen = select_params(model, params)
    names = [n for n, _ in chosen]
    tensors = [p for _, p in chosen]
    dom = batch_domains(batch, n_domains)
    with requires_grad(tensors), torch.enable_grad():
        losses = per_sample_losses(model, loss_fn, batch, dom.to(_device(model, dom)))
        dom = dom.to(losses.device)
        counts = torch.bincount(dom, minlength=n_domains)
        present = counts > 0
        total = sum(int(p.numel()) for p in tensors)
        dtype = torch.promote_types(tensors[0].dtype, torch.float32)  # bf16/fp16 -> fp32 sums
        g = torch.zeros(n_domains, total, dtype=dtype, device=tensors[0].device)
        mean = torch.full((n_domains,), float("nan"), device=losses.device)
        order = present.nonzero().flatten().tolist()
        for j, k in enumerate(order):
            lk = losses[dom == k].mean()
            mean[k] = lk.detach()
            g[k] = _flat_grad(lk, tensors, retain=j < len(order) - 1)
    return DomainGrads(g, present.cpu(), counts.cpu(), mean.detach().cpu(), names,
                       [p.shape for p in tensors])


def _device(model: nn.Module, fallback: torch.Tensor) -> torch.device:
    p = next(model.parameters(), None)
    return fallback.device if p is None else p.device


def reference_grad(model: nn.Module, loss_fn: PerSampleLossFn, batch: ModelInputs,
                   params: ParamSpec = None) -> tuple[torch.Tensor, float]:
    """Gradient of the mean loss over all samples of ``batch`` (e.g. a validation batch)."""
    tensors = [p for _, p in select_params(model, params)]
    with requires_grad(tensors), torch.enable_grad():
        losses = loss_fn(model, batch)
        if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or losses.numel() == 0:
            raise ValueError("loss_fn must return a non-empty 1-D tensor of per-sample losses")
        loss = losses.mean()
        return _flat_grad(loss, tensors, retain=False), float(loss.detach())


def grad_gram(model: nn.Module, loss_fn: PerSampleLossFn, batch: ModelInputs, n_domains: int,
              params: ParamSpec = None, reference: ModelInputs | None = None) -> GradGram:
    """``G Gᵀ`` of the per-domain gradients, optionally with products against a reference batch."""
    dg = domain_grads(model, loss_fn, batch, n_domains, params)
    gram = dg.grads @ dg.grads.T
    out = GradGram(gram, dg.present, dg.counts, dg.losses)
    if reference is not None:
        g_ref, loss = reference_grad(model, loss_fn, reference, params)
        out.ref, out.ref_sq, out.ref_loss = dg.grads @ g_ref, g_ref @ g_ref, loss
    return out


def val_losses(model: nn.Module, loss_fn: PerSampleLossFn, batches: Iterable[ModelInputs] | Mapping[str, Iterable[ModelInputs]],
               domains: list[str]) -> dict[str, float]:
    """Sample-weighted mean loss per domain, in eval mode under ``torch.no_grad``.

    ``batches`` is an iterable of mixed batches (domains from ``batch["domain"]``) or a mapping
    ``domain -> iterable of batches`` (the key gives the domain). Domains without samples are
    NaN. The model's train/eval modes are restored afterwards.
    """
    k = len(domains)
    total = torch.zeros(k, dtype=torch.float64)
    count = torch.zeros(k, dtype=torch.float64)
    streams: list[tuple[int | None, Iterable[ModelInputs]]]
    if isinstance(batches, Mapping):
        unknown = [d for d in batches if d not in domains]
        if unknown:
            raise ValueError(f"unknown domain(s) {unknown}; known: {domains}")
        streams = [(domains.index(d), b) for d, b in batches.items()]
    else:
        streams = [(None, batches)]
    with torch.no_grad(), training_mode(model, False):
        for fixed, stream in streams:
            for batch in stream:
                if fixed is None:
                    dom = batch_domains(batch, k)
                    losses = per_sample_losses(model, loss_fn, batch, dom).double().cpu()
                    total += torch.bincount(dom.cpu(), weights=losses, minlength=k)
                    count += torch.bincount(dom.cpu(), minlength=k).double()
                else:
                    losses = loss_fn(model, batch)
                    if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
                        raise ValueError("loss_fn must return a 1-D tensor of per-sample losses")
                    total[fixed] += float(losses.double().sum())
                    count[fixed] += losses.numel()
    return {d: (float(total[i] / count[i]) if count[i] > 0 else float("nan"))
            for i, d in enumerate(domains)}


class DomainGradRecorder:
    """Per-domain gradients taken from the trainer's own backward passes (no extra pass).

    AC-ODM's released code gets ``g_k`` for free: every micro-batch of a step is single-domain,
    and the difference of the accumulated ``.grad`` of a few weight matrices before and after a
    micro-batch's ``backward()`` is that micro-batch's gradient. Wrap each single-domain
    micro-batch's backward::

        rec = DomainGradRecorder(model, ["layers.3.mlp.down.weight"], n_domains=K)
        for k, mb in enumerate(single_domain_microbatches):
            with rec.record(k):
                (loss_fn(model, mb).mean() / accumulation).backward()
        ...                               # mixed micro-batches: not wrapped
        grads, counts = rec.collect()     # [K, P] mean per domain, micro-batches per domain

    The cost is one copy of the chosen parameters' ``.grad`` per recorded micro-batch (no
    forward, no backward). The gradients carry whatever scale the trainer's loss has (e.g.
    ``1/accumulation``); AC-ODM's reward is invariant to a common scale. Under DDP, record on
    micro-batches run inside ``model.no_sync()`` or the difference includes the all-reduce.
    """

    def __init__(self, model: nn.Module, params: ParamSpec, n_domains: int) -> None:
        chosen = select_params(model, params)
        self.names = [n for n, _ in chosen]
        self.params = [p for _, p in chosen]
        self.n_domains = int(n_domains)
        total = sum(int(p.numel()) for p in self.params)
        dtype = torch.promote_types(self.params[0].dtype, torch.float32)
        self._sum = torch.zeros(self.n_domains, total, dtype=dtype,
                                device=self.params[0].device)
        self._count = torch.zeros(self.n_domains, dtype=torch.long)

    def _flat(self) -> torch.Tensor:
        return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad.detach())
                          .reshape(-1).to(self._sum.dtype) for p in self.params])

    @contextmanager
    def record(self, domain: int) -> Iterator[None]:
        """Attribute the ``.grad`` change inside the block to ``domain``."""
        if not 0 <= int(domain) < self.n_domains:
            raise ValueError(f"domain index {domain} outside [0, {self.n_domains})")
        before = self._flat()
        yield
        self._sum[int(domain)] += self._flat() - before
        self._count[int(domain)] += 1

    @property
    def recorded(self) -> int:
        """Micro-batches recorded since the last :meth:`collect`."""
        return int(self._count.sum())

    def collect(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean recorded gradient per domain ``[K, P]`` (zero rows where none) and the counts;
        resets the recorder for the next step."""
        c = self._count.clone()
        g = self._sum / c.clamp_min(1).to(self._sum.device, self._sum.dtype)[:, None]
        self._sum.zero_()
        self._count.zero_()
        return g, c
