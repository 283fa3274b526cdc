"""Plain Parquet files or globs, written by anyone: blocks are row groups, counts from footers."""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .arrow import block_from_arrow, schema_from_arrow
from .base import Block, Schema, Source, SourceError

GLOB_CHARS = "*?["


def expand_parquet_paths(spec: str | list[str]) -> list[str]:
    """Files named by a path, glob or directory (recursively ``*.parquet``), sorted."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[str] = []
    for s in specs:
        s = os.fspath(s)
        if any(c in s for c in GLOB_CHARS):
            found = sorted(p for p in glob.glob(s, recursive=True) if os.path.isfile(p))
            if not found:
                raise SourceError(f"{s}: no file matches this pattern; check the path")
            out.extend(found)
        elif os.path.isdir(s):
            found = sorted(glob.glob(os.path.join(s, "**", "*.parquet"), recursive=True))
            if not found:
                raise SourceError(f"{s}: directory has no *.parquet files (and no manifest.json, "
                                  f"index.json or dataset_info.json)")
            out.extend(found)
        elif os.path.exists(s):
            out.append(s)
        else:
            raise SourceError(f"{s}: no such file or directory")
    return out


class ParquetSource(Source):
    """Parquet files as they are. Only footers are read at construction."""

    def __init__(self, paths: str | list[str], *, columns: list[str] | None = None):
        self.files = expand_parquet_paths(paths)
        self.uri = self.files[0] if len(self.files) == 1 else f"{self.files[0]} (+{len(self.files) - 1} files)"
        self.columns = columns
        file_of: list[int] = []
        local: list[int] = []
        sizes: list[int] = []
        schema: pa.Schema | None = None
        for i, path in enumerate(self.files):
            try:
                meta = pq.read_metadata(path)
                file_schema = pq.read_schema(path)
            except (OSError, pa.ArrowException) as e:
                raise SourceError(f"{path}: not a readable Parquet file ({e}); is it truncated?") from e
            if columns is not None:
                missing = [c for c in columns if c not in file_schema.names]
                if missing:
                    raise SourceError(f"{path}: no column(s) {missing}; it has {file_schema.names}")
                file_schema = pa.schema([file_schema.field(c) for c in columns])
            if schema is None:
                schema = file_schema
            elif not file_schema.equals(schema):
                raise SourceError(f"{path}: schema differs from {self.files[0]}:\n  {file_schema}\n"
                                  f"vs\n  {schema}\nall files of one domain must share a schema")
            for j in range(meta.num_row_groups):
                n = meta.row_group(j).num_rows
                if n:
                    file_of.append(i)
                    local.append(j)
                    sizes.append(n)
        assert schema is not None
        self._arrow_schema = schema
        self._schema = schema_from_arrow(schema)
        self._file_of = np.asarray(file_of, dtype=np.int64)
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
        return self._schema

    def read_block(self, index: int) -> Block:
        f = int(self._file_of[index])
        j = int(self._local[index])
        path = self.files[f]
        try:
            h = self._open.get(f)
            if h is None:
                h = pq.ParquetFile(path, memory_map=True)
                if len(self._open) >= 8:
                    self._open.pop(next(iter(self._open)))
                self._open[f] = h
            table = h.read_row_group(j, columns=self.columns)
            return block_from_arrow(table, self._arrow_schema.names)
        except (OSError, pa.ArrowException, ValueError) as e:
            raise SourceError(f"{path}: cannot read row group {j} ({type(e).__name__}: {e}); the "
                              f"file is corrupt or truncated") from e
