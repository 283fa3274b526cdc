"""Write a native mixstream domain directory: shards of fixed-size blocks plus ``manifest.json``.

:class:`ShardSink` cuts a stream of Arrow batches into blocks of ``rows_per_block`` rows
(one Parquet row group / Arrow record batch each) and groups blocks into shards of
``blocks_per_shard`` blocks or ``shard_bytes`` bytes, whichever comes first. Every shard is
written to a temp file and renamed when complete; :func:`write_shards` writes the manifest
last, so a directory with a manifest is always complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..sources.arrow import schema_from_arrow
from ..sources.base import Schema
from ..sources.native.byte_columns import encodable
from ..sources.native.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    load_manifest,
    manifest_path,
    save_manifest,
)
from .errors import ShardError
from .shardfile import EXTENSIONS, ShardFile, check_format, count_tokens
from .tables import DataLike, conform, iter_batches


@dataclass(frozen=True)
class ShardLayout:
    """How rows are cut into blocks and blocks into shard files."""

    shard_format: str = "parquet"
    rows_per_block: int = 1024
    blocks_per_shard: int | None = 16
    shard_bytes: int | None = None
    compression: str | None = "zstd"
    block_bytes: int | None = None  # also close a block once its rows hold this many bytes
    # Parquet shards store fixed-width numeric columns as bytes (3.6x faster to decode, see
    # sources/native/byte_columns.py); True keeps list columns for tools that want lists
    parquet_lists: bool = False

    def __post_init__(self) -> None:
        check_format(self.shard_format, self.compression)
        if self.block_bytes is not None and self.block_bytes < 1:
            raise ShardError(f"block_bytes must be >= 1 or None, got {self.block_bytes}")
        if self.rows_per_block < 1:
            raise ShardError(f"rows_per_block must be >= 1, got {self.rows_per_block}")
        if self.blocks_per_shard is not None and self.blocks_per_shard < 1:
            raise ShardError(f"blocks_per_shard must be >= 1 or None, got "
                             f"{self.blocks_per_shard}")
        if self.shard_bytes is not None and self.shard_bytes < 1:
            raise ShardError(f"shard_bytes must be >= 1 or None, got {self.shard_bytes}")
        if self.blocks_per_shard is None and self.shard_bytes is None:
            raise ShardError("give blocks_per_shard or shard_bytes (or both)")


def byte_columns(layout: ShardLayout, schema: Schema) -> list[str]:
    """The columns ``layout``'s shards store as bytes (Parquet, unless ``parquet_lists``)."""
    if layout.shard_format != "parquet" or layout.parquet_lists:
        return []
    return encodable(schema)


@dataclass
class ShardSink:
    """Streams batches of one schema into shard files ``<prefix>-<k:05d>.<ext>`` in ``directory``."""

    directory: str
    layout: ShardLayout = field(default_factory=ShardLayout)
    prefix: str = "shard"
    token_column: str | None = None
    schema: pa.Schema | None = None
    shards: list[ShardInfo] = field(default_factory=list)
    rows: int = 0

    def __post_init__(self) -> None:
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._file: ShardFile | None = None
        self._batches = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add rows; full blocks go to disk at once."""
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for b in batches:
            self._batches += 1
            if b.num_rows == 0:
                continue
            if self.schema is None:
                self.schema = b.schema
                if self.token_column is not None:
                    count_tokens(b.slice(0, 1), self.token_column)  # validates the column
            else:
                b = conform(b, self.schema, f"batch {self._batches} (from row {self.rows})")
            self._pending.append(b)
            self._pending_rows += b.num_rows
            self.rows += b.num_rows
            while (n := self._full_block()) is not None:
                self._emit_block(n)

    def close(self) -> list[ShardInfo]:
        """Flush the last (short) block and shard; returns every shard written."""
        while self._pending_rows:
            self._emit_block(self._full_block() or self._pending_rows)
        self._finish_shard()
        return self.shards

    def _full_block(self) -> int | None:
        """Rows of the next block if the pending rows fill one, else None."""
        rows = self.layout.rows_per_block
        if self.layout.block_bytes is None:
            return rows if self._pending_rows >= rows else None
        assert self.schema is not None
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        size = np.cumsum(row_bytes(table.slice(0, rows)))
        fit = max(int(np.searchsorted(size, self.layout.block_bytes, side="right")), 1)
        if fit < min(rows, self._pending_rows) or self._pending_rows >= rows:
            return min(fit, rows)
        return None

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None

    def _emit_block(self, rows: int) -> None:
        assert self.schema is not None
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        block, rest = table.slice(0, rows), table.slice(rows)
        self._pending = rest.to_batches() if rest.num_rows else []
        self._pending_rows -= rows
        if self._file is None:
            name = f"{self.prefix}-{len(self.shards):05d}{EXTENSIONS[self.layout.shard_format]}"
            os.makedirs(self.directory, exist_ok=True)
            self._file = ShardFile(self.directory, name, self.schema, self.layout.shard_format,
                                   self.layout.compression, self.token_column,
                                   byte_columns=byte_columns(self.layout,
                                                             schema_from_arrow(self.schema)))
        try:
            self._file.write_block(block)
        except BaseException:
            self.abort()
            raise
        full_blocks = (self.layout.blocks_per_shard is not None
                       and len(self._file.blocks) >= self.layout.blocks_per_shard)
        full_bytes = (self.layout.shard_bytes is not None
                      and self._file.nbytes >= self.layout.shard_bytes)
        if full_blocks or full_bytes:
            self._finish_shard()

    def _finish_shard(self) -> None:
        if self._file is not None:
            self.shards.append(self._file.close())
            self._file = None


def row_bytes(table: pa.Table) -> np.ndarray:
    """Approximate bytes of each row (values of strings and lists counted exactly)."""
    out = np.zeros(table.num_rows, dtype=np.int64)
    for col in table.columns:
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
            lengths = pc.binary_length(col)
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            width = t.value_type.bit_width // 8 if pa.types.is_primitive(t.value_type) else 8
            lengths = pc.multiply(pc.list_value_length(col), width)
        else:
            out += max(col.nbytes // max(len(col), 1), 1)
            continue
        out += pc.fill_null(lengths, 0).to_numpy().astype(np.int64)
    return out


def domain_stats(shards: list[ShardInfo], documents: int | None = None,
                 **more: Any) -> dict[str, Any]:
    """Per-domain statistics that controllers read: documents, samples, tokens, bytes."""
    samples = sum(s.samples for s in shards)
    tokens = None if any(s.tokens is None for s in shards) else sum(s.tokens or 0 for s in shards)
    stats: dict[str, Any] = {
        "documents": samples if documents is None else int(documents),
        "samples": samples,
        "tokens": tokens,
        "bytes": sum(s.bytes for s in shards),
    }
    stats.update(more)
    return stats


def build_manifest(domain: str, layout: ShardLayout, schema: pa.Schema,
                   shards: list[ShardInfo], token_column: str | None,
                   stats: dict[str, Any], extra: dict[str, Any] | None = None) -> Manifest:
    spec = schema_from_arrow(schema)
    return Manifest(domain=domain, shard_format=layout.shard_format, schema=spec, shards=shards,
                    token_column=token_column, stats=stats, extra=dict(extra or {}),
                    byte_columns=byte_columns(layout, spec))


def _old_shards(out_dir: str, overwrite: bool) -> list[str]:
    """Shard paths of an existing manifest in ``out_dir`` (refused unless ``overwrite``)."""
    if not os.path.exists(manifest_path(out_dir)):
        return []
    if not overwrite:
        raise ShardError(f"{manifest_path(out_dir)} exists; write to an empty directory or "
                         f"pass overwrite=True to replace that domain")
    return [s.path for s in load_manifest(out_dir).shards]


def write_shards(
    data: DataLike,
    out_dir: str | os.PathLike[str],
    *,
    domain: str,
    shard_format: str = "parquet",
    rows_per_block: int = 1024,
    blocks_per_shard: int | None = 16,
    shard_bytes: int | None = None,
    compression: str | None = "zstd",
    block_bytes: int | None = None,
    token_column: str | None = None,
    schema: pa.Schema | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    parquet_lists: bool = False,
) -> Manifest:
    """Write ``data`` as a mixstream domain directory and return its manifest.

    ``data``: a pyarrow Table / RecordBatch (or an iterable of them), a dict of columns, or an
    iterable of dict records. Numpy token columns: 2-D ``[n, L]`` → ``FixedSizeList<L>``, a
    list of 1-D arrays → ``List``. Blocks hold ``rows_per_block`` rows (fewer if ``block_bytes``
    is set and they would hold more bytes, at least one row); a shard closes after
    ``blocks_per_shard`` blocks or once it reaches ``shard_bytes`` bytes. ``token_column``
    names the column whose tokens are counted in the manifest; ``schema`` fixes the column
    types (otherwise the first batch decides, and every later batch must match). Shards are
    written atomically and the manifest last; the same input gives byte-identical files.
    Parquet shards store fixed-width numeric columns as bytes, which mixstream decodes 3.6x
    faster than lists; ``parquet_lists=True`` keeps list columns for other readers.
    """
    directory = os.fspath(out_dir)
    layout = ShardLayout(shard_format, rows_per_block, blocks_per_shard, shard_bytes, compression,
                         block_bytes, parquet_lists)
    old = _old_shards(directory, overwrite)
    sink = ShardSink(directory, layout, token_column=token_column, schema=schema)
    try:
        for batch in iter_batches(data, rows_per_block, schema):
            sink.write(batch)
        shards = sink.close()
    except BaseException:
        sink.abort()
        raise
    if not shards or sink.schema is None:
        raise ShardError(f"{directory}: no rows to write for domain {domain!r} (empty input)")
    manifest = build_manifest(domain, layout, sink.schema, shards, token_column,
                              domain_stats(shards), extra)
    save_manifest(manifest, directory)
    keep = {s.path for s in shards} | {MANIFEST_NAME}
    for path in old:
        if path not in keep and os.path.exists(os.path.join(directory, path)):
            os.remove(os.path.join(directory, path))
    return manifest
