"""One shard file: blocks written to a hidden temp file, renamed into place when complete.

A Parquet shard holds one row group per block (fixed-width numeric columns stored as bytes,
see :mod:`mixstream.sources.native.byte_columns`), an Arrow IPC file one record batch per
block. Output is deterministic: the same blocks give byte-identical files (pyarrow writes no
timestamps; ``created_by`` names the pyarrow version).
"""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..sources.native.byte_columns import encode, encoded_schema
from ..sources.native.manifest import SHARD_FORMATS, ShardInfo
from .errors import ShardError

PARQUET_CODECS = ("none", "snappy", "gzip", "brotli", "zstd", "lz4")
ARROW_CODECS = ("none", "zstd", "lz4")
EXTENSIONS = {"parquet": ".parquet", "arrow": ".arrow"}
TMP_MARK = ".tmp-"


def check_format(shard_format: str, compression: str | None) -> str:
    """Validate the shard format and codec; returns the codec name (``"none"`` for None)."""
    if shard_format not in SHARD_FORMATS:
        raise ShardError(f"unknown shard format {shard_format!r}; use one of {SHARD_FORMATS}")
    codec = (compression or "none").lower()
    allowed = PARQUET_CODECS if shard_format == "parquet" else ARROW_CODECS
    if codec not in allowed:
        raise ShardError(f"compression {compression!r} is not available for {shard_format} "
                         f"shards; use one of {allowed}")
    return codec


def sha256_file(path: str, fsync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return h.hexdigest()


def count_tokens(table: pa.Table | pa.RecordBatch, column: str | None) -> int | None:
    """Tokens in ``column`` (a list or fixed-size list column); None without a column."""
    if column is None:
        return None
    if column not in table.schema.names:
        raise ShardError(f"token column {column!r} is not among the columns "
                         f"{table.schema.names}; pass token_column=None or the right name")
    col = table.column(column)
    t = col.type
    if pa.types.is_fixed_size_list(t):
        return (len(col) - col.null_count) * t.list_size
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        total = pc.sum(pc.list_value_length(col)).as_py()
        return int(total or 0)
    raise ShardError(f"token column {column!r} is {t}, not a list of token ids")


def compact_batch(table: pa.Table) -> pa.RecordBatch:
    """One record batch with fresh buffers, so IPC bytes do not depend on how input was sliced."""
    arrays = [pa.concat_arrays([*col.chunks, pa.array([], type=col.type)])
              for col in table.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema)


def is_temp(name: str) -> bool:
    return name.startswith(".") and TMP_MARK in name


class ShardFile:
    """Writes blocks to ``<directory>/.<name>.tmp-<pid>``; :meth:`close` renames it to ``name``."""

    def __init__(self, directory: str, name: str, schema: pa.Schema, shard_format: str,
                 compression: str | None, token_column: str | None = None,
                 fsync: bool = True, byte_columns: list[str] | None = None) -> None:
        codec = check_format(shard_format, compression)
        self.directory, self.name, self.schema = directory, name, schema
        self.token_column, self.fsync = token_column, fsync
        self.byte_columns = list(byte_columns or [])
        if self.byte_columns and shard_format != "parquet":
            raise ShardError("internal: byte columns are for Parquet shards")
        self.path = os.path.join(directory, name)
        self.tmp = os.path.join(directory, f".{name}{TMP_MARK}{os.getpid()}")
        self.blocks: list[int] = []
        self.tokens: int | None = None if token_column is None else 0
        self._sink = pa.OSFile(self.tmp, "wb")
        self._writer: pq.ParquetWriter | pa.ipc.RecordBatchFileWriter
        if shard_format == "parquet":
            plain = [f.name for f in schema
                     if f.name != token_column and f.name not in self.byte_columns]
            # page checksums: readers verify them where no whole-file sha256 can be checked
            # (range reads of remote shards, verify=False)
            self._writer = pq.ParquetWriter(
                self._sink, encoded_schema(schema, self.byte_columns), compression=codec,
                use_dictionary=plain or False,
                write_page_checksum=True,
            )
        else:
            options = pa.ipc.IpcWriteOptions(compression=None if codec == "none" else codec)
            self._writer = pa.ipc.new_file(self._sink, schema, options=options)

    @property
    def nbytes(self) -> int:
        """Bytes written so far (complete blocks)."""
        return int(self._sink.tell())

    def write_block(self, block: pa.Table) -> None:
        """Append one block: exactly one row group / record batch."""
        rows = block.num_rows
        if rows == 0:
            raise ShardError("internal: empty block")
        if isinstance(self._writer, pq.ParquetWriter):
            self._writer.write_table(encode(block, self.byte_columns), row_group_size=rows)
        else:
            self._writer.write_batch(compact_batch(block))
        self.blocks.append(rows)
        n = count_tokens(block, self.token_column)
        if n is not None:
            self.tokens = (self.tokens or 0) + n

    def close(self) -> ShardInfo:
        """Finish the file, hash it and move it into place atomically."""
        self._writer.close()
        self._sink.close()
        digest = sha256_file(self.tmp, fsync=self.fsync)
        size = os.path.getsize(self.tmp)
        os.replace(self.tmp, self.path)
        return ShardInfo(path=self.name, samples=sum(self.blocks), blocks=list(self.blocks),
                         bytes=size, sha256=digest, tokens=self.tokens)

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - the writer may be in any state after an error
            pass
        self._sink.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
