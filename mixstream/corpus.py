"""The corpus of a stream: its domains, the columns batches carry and each domain's window.

Everything here is decided once per domain set (construction, and a domain-set change) and is
read by the reader plan and the checkpoint; nothing depends on the loader or the position.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .checkpoint import blocks_digest, content_units, units_digest
from .sources.base import Schema
from .sources.resolve import Domain


class Corpus:
    """Domains in stream order, the batched and per-sample schemas, and shuffle windows."""

    def __init__(self, domains: Sequence[Domain], *, columns: list[str] | None,
                 shuffle_window: int, memory_budget: int | None):
        self.domains = list(domains)
        self.names = [d.name for d in self.domains]
        self.schema = _select_columns(self.domains, columns)
        self.union_schema = dict(self.schema)
        if columns is None:
            for dom in self.domains[1:]:
                for key, spec in dom.schema.items():
                    self.union_schema.setdefault(key, spec)
        self.windows = [_window(dom, len(self.domains), shuffle_window, memory_budget)
                        for dom in self.domains]

    def __len__(self) -> int:
        return len(self.domains)

    def check_batchable(self) -> None:
        """Batched mode stacks columns across domains: every domain needs the same ones."""
        for dom in self.domains[1:]:
            mine = {c: dom.schema.get(c) for c in self.schema}
            if mine != self.schema:
                raise ValueError(f"batched mode needs the same columns in every domain; domain "
                                 f"{dom.name!r} has {_fmt(dom.schema)} but {self.names[0]!r} has "
                                 f"{_fmt(self.schema)}: select common columns with "
                                 f"MixStream(columns=[...]) or use per-sample mode")

    def check_new(self, names: list[str]) -> None:
        """Domains joining this corpus need new names."""
        for name in names:
            if name in self.names:
                raise ValueError(f"domain {name!r} is already in this stream")

    def without(self, names: list[str]) -> list[Domain]:
        """The domains left when ``names`` retire (each must be here; one must be left)."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"unknown domain(s) {missing}; this stream has {self.names}")
        keep = [d for d in self.domains if d.name not in names]
        if not keep:
            raise ValueError("cannot remove every domain")
        return keep

    def stats(self) -> dict[str, dict[str, int | None]]:
        return {d.name: d.stats() for d in self.domains}

    def get_state(self) -> list[list[Any]]:
        """Per domain ``[name, samples, fingerprint, blocks, blocks digest, units, units
        digest]``: what a checkpoint needs to recognise the data (or the same data grown)."""
        return [[d.name, d.num_samples, fingerprint(d), len(d.block_sizes),
                 blocks_digest(d.block_sizes), *_units(d)] for d in self.domains]


def fingerprint(dom: Domain) -> str | None:
    fn = getattr(dom, "fingerprint", None)
    return None if fn is None else str(fn())


def _units(dom: Domain) -> list[Any]:
    units = content_units(dom.sources)
    return [len(units), units_digest(units)]


def _select_columns(domains: list[Domain], columns: list[str] | None) -> Schema:
    first = domains[0]
    if columns is None:
        return dict(first.schema)
    for dom in domains:
        missing = [c for c in columns if c not in dom.schema]
        if missing:
            raise ValueError(f"domain {dom.name!r} has no column(s) {missing}; it has "
                             f"{list(dom.schema)}")
    return {c: first.schema[c] for c in columns}


def _window(dom: Domain, num_domains: int, shuffle_window: int, memory_budget: int | None) -> int:
    w = shuffle_window
    if memory_budget is not None:
        w = int(memory_budget // (2 * num_domains * _bytes_per_sample(dom)))
    return max(1, min(int(w), dom.num_samples))  # a window never repeats a sample


def _bytes_per_sample(dom: Domain) -> float:
    stats = dom.stats()
    if stats.get("bytes"):
        return max(1.0, stats["bytes"] / dom.num_samples)  # type: ignore[operator]
    total = 0.0
    for spec in dom.schema.values():
        item = np.dtype(spec.dtype).itemsize if spec.kind != "object" else 64
        total += item * (spec.width or (1 if spec.kind == "scalar" else 256))
    return max(1.0, total)


def _fmt(schema: Schema) -> str:
    return json.dumps({k: v.describe() for k, v in schema.items()})
