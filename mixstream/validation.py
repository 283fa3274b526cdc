"""Per-domain validation losses on held-out data, for controllers that ask for them.

``per_domain_loss(loss_fn, model, batches, domains)`` evaluates ``model`` in eval mode without
gradients and returns ``{domain: mean loss}``. ``batches`` is either an iterable of batches with
``batch["domain"]`` (a held-out ``MixStream``/``DataLoader``, a list) or a mapping
``{domain: iterable of batches}`` (one held-out split per domain). ``loss_fn(model, batch)``
returns per-sequence losses ``[B]``, or ``(losses [B], loss_tokens [B])`` for token-weighted
means. Under torch.distributed the sums are all-reduced, so every rank gets the same numbers.

:class:`Validator` packages this as the zero-argument callable controllers take
(``Aioli(stream, validate=Validator(loss_fn, model, val_batches, stream.domains))``).

Targets that are not training domains: pass a mapping ``{name: batches}`` whose names are the
target sets and omit ``domains`` (``Validator(loss_fn, model, {"target": batches})``); the
result is ``{name: loss}``, which ``Aioli(targets=[...])`` consumes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from .feedback import all_reduce_sum

#: one held-out batch (tensors by name; ``batch["domain"]`` unless batches come per domain)
HeldOutBatch = Mapping[str, Any]
#: ``loss_fn(model, batch)`` -> losses ``[B]``, or ``(losses [B], loss tokens [B])``
ValidationLossFn = Callable[[torch.nn.Module, HeldOutBatch],
                            "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def _split(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError("loss_fn must return losses [B] or (losses [B], tokens [B])")
        return out[0], out[1]
    return out, None


def per_domain_loss(loss_fn: ValidationLossFn, model: torch.nn.Module,
                    batches: Iterable[HeldOutBatch] | Mapping[str, Iterable[HeldOutBatch]],
                    domains: Sequence[str], *, max_batches: int | None = None,
                    require_all: bool = True) -> dict[str, float]:
    """Mean held-out loss per domain (token-weighted if ``loss_fn`` returns token counts).

    ``max_batches`` caps batches per call (per domain for a mapping). With ``require_all`` a
    domain without any validation sample raises ``ValueError``; otherwise it is left out.
    """
    names = list(domains)
    k = len(names)
    sums = torch.zeros(2, k, dtype=torch.float64)  # [loss*weight, weight]

    def add(dom: torch.Tensor, out: Any) -> None:
        loss, tok = _split(out)
        loss = loss.detach().reshape(-1).to(torch.float64).cpu()
        if loss.numel() != dom.numel():
            raise ValueError(f"loss_fn returned {loss.numel()} losses for {dom.numel()} samples")
        w = torch.ones_like(loss) if tok is None else tok.detach().reshape(-1).to(
            torch.float64).cpu()
        if not bool(torch.isfinite(loss).all()):
            raise ValueError("loss_fn returned a non-finite validation loss")
        sums[0].index_add_(0, dom, loss * w)
        sums[1].index_add_(0, dom, w)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(batches, Mapping):
                unknown = [d for d in batches if d not in names]
                if unknown:
                    raise ValueError(f"validation splits for unknown domain(s) {unknown}; "
                                     f"domains are {names}")
                for name, it in batches.items():
                    idx = names.index(name)
                    for batch in itertools.islice(it, max_batches):
                        out = loss_fn(model, batch)
                        n = _split(out)[0].reshape(-1).numel()
                        add(torch.full((n,), idx, dtype=torch.long), out)
            else:
                for batch in itertools.islice(batches, max_batches):
                    dom = torch.as_tensor(batch["domain"]).reshape(-1).long().cpu()
                    if dom.numel() and (int(dom.min()) < 0 or int(dom.max()) >= k):
                        raise ValueError(f"batch['domain'] has ids outside 0..{k - 1}")
                    add(dom, loss_fn(model, batch))
    finally:
        model.train(was_training)
    sums = all_reduce_sum(sums)
    missing = [d for d, w in zip(names, sums[1].tolist(), strict=True) if w <= 0]
    if missing and require_all:
        raise ValueError(f"no validation samples for domain(s) {missing}; give every domain a "
                         f"held-out split or pass require_all=False")
    return {d: float(s / w) for d, s, w in zip(names, sums[0].tolist(), sums[1].tolist(),
                                               strict=True) if w > 0}


class Validator:
    """A zero-argument callable for controllers: evaluates fixed held-out batches each call.

    ``batches`` must be re-iterable (a list, a DataLoader over a finite split, or a mapping of
    those); to keep evaluations comparable, use the same batches every time.
    """

    def __init__(self, loss_fn: ValidationLossFn, model: torch.nn.Module,
                 batches: Iterable[HeldOutBatch] | Mapping[str, Iterable[HeldOutBatch]],
                 domains: Sequence[str] | None = None, *,
                 max_batches: int | None = None) -> None:
        if domains is None:
            if not isinstance(batches, Mapping):
                raise ValueError("give domains=..., or a mapping {set name: batches} whose "
                                 "names are the validation/target sets")
            domains = list(batches)
        self.loss_fn, self.model, self.batches = loss_fn, model, batches
        self.domains, self.max_batches = list(domains), max_batches
        self.calls = 0

    def __call__(self) -> dict[str, float]:
        self.calls += 1
        return per_domain_loss(self.loss_fn, self.model, self.batches, self.domains,
                               max_batches=self.max_batches)
