"""MDS output (mosaicml-streaming's format) through its own ``MDSWriter``, when installed.

Each work unit writes an MDS sub-directory ``<domain>/unit-<u:05d>/``; :func:`merge` joins
their ``index.json`` files, in unit order, into ``<domain>/index.json``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa

from ..sources.native.manifest import ShardInfo
from .errors import ShardError

MISSING = ("--format mds needs mosaicml-streaming, which is not installed; install it with "
           "`pip install mosaicml-streaming` (it pins transformers<5, numpy<2.2, torchvision: "
           "use a separate environment if those clash), or write --format parquet, which "
           "mixstream reads natively")
CODECS = {"none": None, "zstd": "zstd", "gzip": "gz", "brotli": "br", "snappy": "snappy"}


def require_streaming() -> Any:
    """The ``streaming`` module, or a :class:`ShardError` that says how to get it."""
    try:
        import streaming
    except ImportError as e:
        raise ShardError(MISSING) from e
    return streaming


def mds_columns(schema: pa.Schema) -> dict[str, str]:
    """MDS encodings for an Arrow schema: token columns as ndarrays, text as str, else json."""
    out = {}
    for f in schema:
        t = f.type
        if pa.types.is_fixed_size_list(t) and pa.types.is_integer(t.value_type):
            out[f.name] = f"ndarray:{t.value_type.to_pandas_dtype().__name__}:{t.list_size}"
        elif (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(
                t.value_type):
            out[f.name] = f"ndarray:{t.value_type.to_pandas_dtype().__name__}"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            out[f.name] = "str"
        else:
            out[f.name] = "json"
    return out


def _rows(table: pa.Table, columns: dict[str, str]) -> list[dict[str, Any]]:
    cols: dict[str, list[Any]] = {}
    for name, enc in columns.items():
        col = table.column(name).combine_chunks()
        if enc.startswith("ndarray:") and pa.types.is_fixed_size_list(col.type):
            flat = col.flatten().to_numpy()
            cols[name] = list(flat.reshape(len(col), col.type.list_size))
        elif enc.startswith("ndarray:"):
            off = col.offsets.to_numpy()
            vals = col.values.to_numpy()
            cols[name] = [np.ascontiguousarray(vals[a:b]) for a, b in zip(off[:-1], off[1:], strict=True)]
        else:
            cols[name] = col.to_pylist()
    return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


class MDSSink:
    """Same interface as :class:`~mixstream.shards.writer.ShardSink`, writing MDS shards."""

    def __init__(self, directory: str, layout: Any) -> None:
        streaming = require_streaming()
        if layout.compression not in CODECS and layout.compression is not None:
            raise ShardError(f"compression {layout.compression!r} is not available for MDS; "
                             f"use one of {sorted(CODECS)}")
        self._cls = streaming.MDSWriter
        self.directory, self.layout = directory, layout
        self.schema: pa.Schema | None = None
        self._writer: Any = None
        self._columns: dict[str, str] = {}

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.schema, self._columns = table.schema, mds_columns(table.schema)
            if os.path.exists(self.directory):  # a unit interrupted earlier: start it again
                shutil.rmtree(self.directory)
            # hashes in index.json: readers check them (mixstream's MDSSource, verify=True:
            # the fastest, once per file; mosaic's StreamingDataset(validate_hash=...))
            self._writer = self._cls(
                out=self.directory, columns=self._columns,
                compression=CODECS[self.layout.compression or "none"],
                hashes=["sha1", "xxh64"],
                size_limit=self.layout.shard_bytes or (1 << 26))
        for row in _rows(table, self._columns):
            self._writer.write(row)

    def close(self) -> list[ShardInfo]:
        if self._writer is not None:
            self._writer.finish()
        return []

    def abort(self) -> None:
        if os.path.exists(self.directory):
            shutil.rmtree(self.directory)


def merge(domain_dir: str, unit_dirs: list[str]) -> str:
    """Join the units' ``index.json`` into ``<domain_dir>/index.json``; returns its path."""
    from streaming.base.util import merge_index

    indexes = [os.path.join(domain_dir, d, "index.json") for d in unit_dirs]
    merge_index(indexes, domain_dir, keep_local=True)
    return os.path.join(domain_dir, "index.json")
