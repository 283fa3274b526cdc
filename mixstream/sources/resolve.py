"""Turn what a user passes for a domain (path, glob, Dataset, Source, list) into sources."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..remote.config import RemoteConfig
from ..remote.fs import filesystem, is_url, join, local_path
from ..remote.store import get_store
from .base import Block, Schema, Source, SourceError
from .integrity import digest
from .parquet import GLOB_CHARS


def open_remote(url: str, remote: RemoteConfig | None = None, verify: bool = True) -> Source:
    """A :class:`Source` for an fsspec URL: a shard directory (manifest.json), an MDS directory
    (index.json), a Parquet file, glob or directory."""
    remote = remote or RemoteConfig()
    filesystem(url, remote)  # a missing backend is reported for the URL the user gave
    if any(c in url.split("://", 1)[1] for c in GLOB_CHARS) or url.endswith(".parquet"):
        from .parquet import ParquetSource

        return ParquetSource(url, remote=remote, verify=verify)
    store = get_store(remote)
    root = url.rstrip("/")
    try:
        manifest = store.read_small(join(root, "manifest.json"))
    except FileNotFoundError:
        pass
    else:
        from .native import NativeSource

        return NativeSource(root, remote=remote, manifest_bytes=manifest, verify=verify)
    try:
        store.read_small(join(root, "index.json"))
    except FileNotFoundError:
        pass
    else:
        from .mds import MDSSource

        return MDSSource(root, remote=remote, verify=verify)
    for marker in ("dataset_info.json", "state.json"):
        try:
            store.read_small(join(root, marker))
        except FileNotFoundError:
            continue
        raise SourceError(f"{url}: a datasets save_to_disk folder at a URL is not read remotely; "
                          f"convert it with `mixstream-shard convert` and upload the shard "
                          f"directory, or copy it to local disk")
    from .parquet import ParquetSource

    return ParquetSource(root, remote=remote, verify=verify)


def open_source(spec: Any, remote: RemoteConfig | None = None, verify: bool = True) -> Source:
    """One :class:`Source` for a path, URL, glob, ``datasets.Dataset`` or ready-made Source.

    ``remote`` configures URLs (cache directory and limit, concurrency, retries). ``verify``
    (default on) checks each local file against the hash its manifest or MDS index records,
    once per file per process, and Parquet page checksums where the writer stored them;
    ``False`` skips those (structural validation of every block stays on). A ready-made
    Source keeps its own setting."""
    if isinstance(spec, Source):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        try:
            import datasets
        except ImportError:  # pragma: no cover - datasets is a core dependency
            datasets = None
        if datasets is not None and isinstance(spec, (datasets.Dataset, datasets.DatasetDict)):
            from .hf import HFSource

            return HFSource(spec)
        raise SourceError(f"cannot read a domain from {type(spec).__name__}; pass a path, glob, "
                          f"datasets.Dataset or mixstream Source")
    if is_url(spec):
        return open_remote(os.fspath(spec), remote, verify)
    path = local_path(spec)
    if any(c in path for c in GLOB_CHARS):
        from .parquet import ParquetSource

        return ParquetSource(path, verify=verify)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "manifest.json")):
            from .native import NativeSource

            return NativeSource(path, verify=verify)
        if os.path.exists(os.path.join(path, "index.json")):
            from .mds import MDSSource

            return MDSSource(path, verify=verify)
        if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(
            os.path.join(path, "state.json")
        ):
            from .hf import HFSource

            return HFSource(path)
        from .parquet import ParquetSource

        return ParquetSource(path, verify=verify)
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file or directory")
    if path.endswith(".parquet"):
        from .parquet import ParquetSource

        return ParquetSource(path, verify=verify)
    raise SourceError(f"{path}: unsupported file type; MixStream reads mixstream shard directories, "
                      f"Parquet files/globs, MDS directories and datasets save_to_disk folders "
                      f"(convert other formats with `mixstream-shard convert`)")


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
        except SourceError as e:
            raise SourceError(f"domain {name!r}: {e}") from e
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
            except SourceError as e:
                raise SourceError(f"domain {self.name!r}: {e}") from e
            self._fingerprint = digest({"name": self.name,
                                        "block_sizes": self.block_sizes.astype("<i8").tobytes(),
                                        "sources": parts})
        return self._fingerprint

    def read_block(self, index: int) -> Block:
        i = int(self._source_of[index])
        try:
            return self.sources[i].read_block(index - int(self._first[i]))
        except SourceError as e:
            raise SourceError(f"domain {self.name!r}: {e}") from e

    def prefetch(self, blocks: Sequence[int]) -> None:
        """Hint: these blocks are read soon. Remote sources start fetching them in the
        background (bounded concurrency); local sources ignore it."""
        by_source: dict[int, list[int]] = {}
        for b in blocks:
            i = int(self._source_of[b])
            by_source.setdefault(i, []).append(int(b) - int(self._first[i]))
        for i, local in by_source.items():
            hint = getattr(self.sources[i], "prefetch", None)
            if hint is not None:
                try:
                    hint(local)
                except SourceError as e:
                    raise SourceError(f"domain {self.name!r}: {e}") from e

    def stats(self) -> dict[str, int | None]:
        """Samples, tokens, bytes and documents, where the sources know them."""
        out: dict[str, int | None] = {"samples": self.num_samples, "tokens": None, "bytes": None,
                                      "documents": None}
        manifests = [getattr(s, "manifest", None) for s in self.sources]
        if all(m is not None for m in manifests):
            for key in ("tokens", "bytes", "documents"):
                vals = [m.stats.get(key) for m in manifests]  # type: ignore[union-attr]
                out[key] = sum(vals) if all(v is not None for v in vals) else None
        if out["tokens"] is None:
            per = [s.tokens_per_sample() for s in self.sources]
            if all(p is not None for p in per):
                out["tokens"] = int(sum(float(p or 0) * s.num_samples
                                        for p, s in zip(per, self.sources)))
        return out


def _describe(schema: Schema) -> str:
    return "{" + ", ".join(f"{k}: {v.describe()}" for k, v in schema.items()) + "}"
