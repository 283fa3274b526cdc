"""Turn what a user passes for a domain (path, glob, Dataset, Source, list) into sources."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MixstreamError, RemoteError, SourceError
from ..remote.config import RemoteConfig
from . import hf
from .base import Block, Schema, Source
from .integrity import digest
from .registry import open_path


def open_source(spec: Any, remote: RemoteConfig | None = None, verify: bool = True) -> Source:
    """One :class:`Source` for a path, URL, glob, ``datasets.Dataset`` or ready-made Source.

    Paths and URLs are opened by the format registry (:mod:`.registry`). ``remote``
    configures URLs (cache directory and limit, concurrency, retries). ``verify`` (default on)
    checks each local file against the hash its manifest or MDS index records, once per file
    per process, and Parquet page checksums where the writer stored them; ``False`` skips
    those (structural validation of every block stays on). A ready-made Source keeps its own
    setting."""
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return open_path(spec, remote, verify)
    source = hf.from_object(spec)
    if source is None:
        raise SourceError(f"cannot read a domain from {type(spec).__name__}; pass a path, glob, "
                          f"datasets.Dataset or mixstream Source")
    return source


def _in_domain(name: str, e: MixstreamError) -> MixstreamError:
    """The same kind of error (a SourceError stays a ValueError, a RemoteError an OSError),
    its message prefixed with the domain."""
    msg = f"domain {name!r}: {e}"
    try:
        return type(e)(msg)
    except TypeError:  # a subclass with another signature: keep the kind, lose the subclass
        return RemoteError(msg) if isinstance(e, OSError) else SourceError(msg)


class Domain:
    """One domain: the blocks of its sources, end to end, with one schema.

    ``verify`` is passed to :func:`open_source` for every path or URL of the domain."""

    def __init__(self, name: str, spec: Any, remote: RemoteConfig | None = None,
                 verify: bool = True):
        self.name = name
        self.verify = bool(verify)
        self._fingerprint: str | None = None
        specs: Sequence[Any] = spec if isinstance(spec, (list, tuple)) else [spec]
        if not specs:
            raise SourceError(f"domain {name!r}: empty list of sources")
        try:
            self.sources = [open_source(s, remote, verify) for s in specs]
        except MixstreamError as e:
            raise _in_domain(name, e) from e
        first = self.sources[0]
        for s in self.sources[1:]:
            if s.schema != first.schema:
                raise SourceError(f"domain {name!r}: {s.uri} has columns "
                                  f"{_describe(s.schema)} but {first.uri} has {_describe(first.schema)}; "
                                  f"all sources of a domain must share a schema")
        self.schema: Schema = first.schema
        sizes = [s.block_sizes for s in self.sources]
        self.block_sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
        self._source_of = np.concatenate([np.full(len(x), i, np.int64) for i, x in enumerate(sizes)])
        self._first = np.concatenate([[0], np.cumsum([len(x) for x in sizes])])[:-1].astype(np.int64)
        if (self.block_sizes < 0).any() or float(self.block_sizes.sum(dtype=np.float64)) >= 2**62:
            raise SourceError(f"domain {name!r}: block sizes of {first.uri} are negative or "
                              f"add up past 2**62 samples; its index is corrupt")
        self.num_samples = int(self.block_sizes.sum())
        if self.num_samples == 0:
            raise SourceError(f"domain {name!r}: {first.uri} holds no samples")

    def fingerprint(self) -> str:
        """A short stable digest (16 hex digits) of the corpus identity: the domain name, its
        block sizes, and each source's file identity (shard sha256s from a manifest; names,
        sizes and index/footer metadata for MDS, Parquet and datasets folders). Paths above
        the dataset and mtimes are left out, so the same files copied elsewhere give the same
        fingerprint; a changed shard gives another. Computed once, then cached."""
        if self._fingerprint is None:
            try:
                parts = [s.fingerprint_parts() for s in self.sources]
            except MixstreamError as e:
                raise _in_domain(self.name, e) from e
            self._fingerprint = digest({"name": self.name,
                                        "block_sizes": self.block_sizes.astype("<i8").tobytes(),
                                        "sources": parts})
        return self._fingerprint

    def read_block(self, index: int) -> Block:
        i = int(self._source_of[index])
        try:
            return self.sources[i].read_block(index - int(self._first[i]))
        except MixstreamError as e:
            raise _in_domain(self.name, e) from e

    def prefetch(self, blocks: Sequence[int]) -> None:
        """Hint: these blocks are read soon (:meth:`Source.prefetch` of each source)."""
        by_source: dict[int, list[int]] = {}
        for b in blocks:
            i = int(self._source_of[b])
            by_source.setdefault(i, []).append(int(b) - int(self._first[i]))
        for i, local in by_source.items():
            try:
                self.sources[i].prefetch(local)
            except MixstreamError as e:
                raise _in_domain(self.name, e) from e

    def stats(self) -> dict[str, int | None]:
        """Samples, tokens, bytes and documents: each the sum over the sources
        (:meth:`Source.stats`), None where any source does not know it."""
        per = [s.stats() for s in self.sources]
        out: dict[str, int | None] = {"samples": self.num_samples}
        for key in ("tokens", "bytes", "documents"):
            vals = [p.get(key) for p in per]
            out[key] = sum(v for v in vals if v is not None) if all(v is not None for v in vals) else None
        return out


def _describe(schema: Schema) -> str:
    return "{" + ", ".join(f"{k}: {v.describe()}" for k, v in schema.items()) + "}"
