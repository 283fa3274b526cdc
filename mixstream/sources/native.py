"""Native mixstream domain directories: a manifest plus Parquet or Arrow IPC shards."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..shards.manifest import Manifest, load_manifest
from .arrow import block_from_arrow
from .base import Block, Schema, Source, SourceError


class NativeSource(Source):
    """A directory written by :func:`mixstream.write_shards` or indexed by ``mixstream-shard``.

    Sample counts come from the manifest, so construction opens no shard. Shard sizes are
    checked against the manifest (a truncated or replaced shard is reported up front).
    """

    def __init__(self, directory: str, *, check_sizes: bool = True):
        self.uri = os.fspath(directory)
        self.manifest: Manifest = load_manifest(self.uri)
        self._files: list[str] = []
        shard_of: list[int] = []
        local: list[int] = []
        sizes: list[int] = []
        for i, shard in enumerate(self.manifest.shards):
            path = os.path.join(self.uri, shard.path)
            self._files.append(path)
            if check_sizes:
                try:
                    actual = os.path.getsize(path)
                except OSError as e:
                    raise SourceError(f"{path}: shard listed in {self.uri}/manifest.json is missing "
                                      f"({e.strerror}); restore it or re-run the conversion") from e
                if shard.bytes and actual != shard.bytes:
                    raise SourceError(f"{path}: {actual} bytes on disk but the manifest says "
                                      f"{shard.bytes} (truncated or replaced?); re-run the conversion "
                                      f"or `mixstream-shard verify {self.uri}`")
            for j, n in enumerate(shard.blocks):
                shard_of.append(i)
                local.append(j)
                sizes.append(n)
        self._shard_of = np.asarray(shard_of, dtype=np.int64)
        self._local = np.asarray(local, dtype=np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._open: dict[int, Any] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    @property
    def block_sizes(self) -> np.ndarray:
        return self._sizes

    @property
    def schema(self) -> Schema:
        return self.manifest.schema

    def tokens_per_sample(self) -> float | None:
        tokens = self.manifest.num_tokens
        n = self.manifest.num_samples
        return tokens / n if tokens is not None and n else None

    def _handle(self, shard: int) -> Any:
        h = self._open.get(shard)
        if h is None:
            path = self._files[shard]
            if self.manifest.shard_format == "parquet":
                h = pq.ParquetFile(path, memory_map=True)
            else:
                h = pa.ipc.open_file(pa.memory_map(path, "r"))
            if len(self._open) >= 8:  # bound open files per reader
                self._open.pop(next(iter(self._open)))
            self._open[shard] = h
        return h

    def read_block(self, index: int) -> Block:
        shard = int(self._shard_of[index])
        j = int(self._local[index])
        path = self._files[shard]
        try:
            h = self._handle(shard)
            if self.manifest.shard_format == "parquet":
                data = h.read_row_group(j)
            else:
                data = h.get_batch(j)
            block = block_from_arrow(data, list(self.manifest.schema))
        except (OSError, pa.ArrowException, ValueError, KeyError, IndexError) as e:
            raise SourceError(f"{path}: cannot read block {j} ({type(e).__name__}: {e}); the shard "
                              f"is corrupt or truncated: re-run the conversion") from e
        if data.num_rows != self._sizes[index]:
            raise SourceError(f"{path}: block {j} has {data.num_rows} rows, the manifest says "
                              f"{self._sizes[index]}; re-run the conversion")
        return block
