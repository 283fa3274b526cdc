"""One single-domain micro-batch per domain per step (what AC-ODM's batch composition needs).

AC-ODM builds every optimizer step from one micro-batch of *every* domain plus micro-batches
drawn from the current weights. The core :class:`~mixstream.MixStream` is left as it is: the
forced part comes from one single-domain ``MixStream({d: path})`` per domain (each with its own
loader, state and resume), the rest from the main stream driven by the controller.
:class:`ForcedDomainBatches` yields, per step, the list of per-domain micro-batches with
``batch["domain"]`` rewritten to the index in the main stream's domain list;
:func:`concat_batches` joins micro-batches into one step batch (e.g. for
``ACODM.feedback(batch=...)``).

Deviation: the released code draws the non-forced micro-batches i.i.d. from the weights, each
single-domain; here they come as mixed batches from the main stream (block-deterministic
counts, exactly resumable).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch


class ForcedDomainBatches:
    """Per step: one micro-batch from each domain's iterable, domain ids set to global indices."""

    def __init__(self, loaders: Mapping[str, Iterable[Mapping[str, Any]]],
                 domains: Sequence[str]) -> None:
        unknown = [d for d in loaders if d not in domains]
        missing = [d for d in domains if d not in loaders]
        if unknown or missing:
            raise ValueError(f"need exactly one loader per domain of {list(domains)}; unknown "
                             f"{unknown}, missing {missing}")
        self.domains = list(domains)
        self.loaders = dict(loaders)
        self._its: dict[str, Iterator[Mapping[str, Any]]] | None = None

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        self._its = {d: iter(self.loaders[d]) for d in self.domains}
        return self

    def __next__(self) -> list[dict[str, Any]]:
        if self._its is None:
            iter(self)
        assert self._its is not None
        out = []
        for k, d in enumerate(self.domains):
            b = dict(next(self._its[d]))
            n = len(next(v for v in b.values() if isinstance(v, torch.Tensor)))
            b["domain"] = torch.full((n,), k, dtype=torch.long)
            out.append(b)
        return out


def concat_batches(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Concatenate the tensor entries of micro-batches (keys of the first batch)."""
    if not batches:
        raise ValueError("no micro-batches to concatenate")
    return {key: torch.cat([torch.as_tensor(b[key]) for b in batches])
            for key, v in batches[0].items() if isinstance(v, torch.Tensor)}
