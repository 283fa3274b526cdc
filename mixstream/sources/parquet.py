"""Plain Parquet files or globs, written by anyone: blocks are row groups, counts from footers.

Paths may be fsspec URLs (a file, a glob, or a directory searched for ``*.parquet``): footers
are fetched at construction (once per machine, through the shared cache) and row groups are
read with range reads, or whole files for files up to ``RemoteConfig.whole_file_max_bytes``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MixstreamError, SourceError
from ..remote.config import RemoteConfig
from ..remote.fs import is_url, local_path
from ..remote.parquet import RemoteParquetFile
from ..remote.store import get_store
from .arrow import block_from_arrow, schema_from_arrow
from .base import Block, Schema, Source
from .handles import ThreadHandles
from .integrity import validate_arrow
from .location import GLOB_CHARS, Format, Location

MAX_OPEN = 8  # open files per reader thread (ThreadHandles keeps 4 threads' worth)


def expand_parquet_paths(spec: str | list[str]) -> list[str]:
    """Files named by a path, glob or directory (recursively ``*.parquet``), sorted."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[str] = []
    for s in specs:
        s = local_path(s)
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


def expand_parquet_urls(spec: str, remote: RemoteConfig) -> list[tuple[str, dict[str, Any]]]:
    """``(url, info)`` of the files a URL, glob URL or directory URL names."""
    store = get_store(remote)
    try:
        if any(c in spec.split("://", 1)[1] for c in GLOB_CHARS):
            found = store.glob(spec)
            if not found:
                raise SourceError(f"{spec}: no file matches this pattern; check the URL")
            return found
        if spec.endswith(".parquet"):
            return [(spec, store.info(spec))]
        found = store.find(spec.rstrip("/"), ".parquet")
    except FileNotFoundError as e:
        raise SourceError(f"{spec}: no such file or directory at the remote ({e})") from e
    if not found:
        raise SourceError(f"{spec}: no *.parquet files under this URL (and no manifest.json or "
                          f"index.json); pass the file URLs or a glob, or check that the server "
                          f"lists directories")
    return found


class ParquetSource(Source):
    """Parquet files as they are. Only footers are read at construction.

    Integrity: plain Parquet records no file hash, so ``verify`` (default on) turns on
    Parquet's own page checksums (CRC32 per data page, checked when the page is read; written
    by parquet-mr/Spark by default, by pyarrow with ``write_page_checksum=True``). Every row
    group read is validated structurally (Arrow ``validate(full=True)``). Corrupt compressed
    pages fail to decompress; a flipped bit in an uncompressed page of a file written without
    checksums is not detectable by any reader.
    """

    def __init__(self, paths: str | list[str], *, columns: list[str] | None = None,
                 remote: RemoteConfig | None = None, verify: bool = True):
        self.verify = bool(verify)
        specs = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        urls = [os.fspath(s) for s in specs if is_url(s)]
        self.remote = (remote or RemoteConfig()) if urls else None
        self._remote: list[RemoteParquetFile | None] = []
        if urls:
            if len(urls) != len(specs):
                raise SourceError(f"{specs}: mix of local paths and URLs in one Parquet source; "
                                  f"give them as separate sources of the domain")
            assert self.remote is not None
            found = [f for u in urls for f in expand_parquet_urls(u, self.remote)]
            self.files = [u for u, _ in found]
            self._remote = get_store(self.remote).map(lambda f: self._open_remote(*f), found)
        else:
            self.files = expand_parquet_paths(paths)
            self._remote = [None] * len(self.files)
        self.uri = self.files[0] if len(self.files) == 1 else f"{self.files[0]} (+{len(self.files) - 1} files)"
        self.columns = columns
        file_of: list[int] = []
        local: list[int] = []
        sizes: list[int] = []
        schema: pa.Schema | None = None
        for i, path in enumerate(self.files):
            rf = self._remote[i]
            try:
                if rf is None:
                    meta = pq.read_metadata(path)
                    file_schema = pq.read_schema(path)
                else:
                    meta = rf.metadata
                    file_schema = meta.schema.to_arrow_schema()
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
        self._handles = ThreadHandles(MAX_OPEN * 4)

    def _open_remote(self, url: str, info: dict[str, Any]) -> RemoteParquetFile:
        assert self.remote is not None
        size = info.get("size")
        if size is None:
            info = get_store(self.remote).info(url)
            size = info.get("size")
        if size is None:
            raise SourceError(f"{url}: the server does not report the file size (no "
                              f"Content-Length); Parquet range reads need it")
        tag = str(info.get("ETag") or info.get("etag") or info.get("LastModified")
                  or info.get("mtime") or "")
        rf = RemoteParquetFile(url, int(size), self.remote, tag=tag)
        rf.metadata  # noqa: B018 - fetch the footer now (pickled to workers with the source)
        return rf

    @property
    def block_sizes(self) -> np.ndarray:
        return self._sizes

    @property
    def schema(self) -> Schema:
        return self._schema

    def prefetch(self, blocks: Sequence[int]) -> None:
        """Start fetching the row groups (or whole files) of ``blocks`` in the background."""
        if self.remote is None:
            return
        reqs = []
        for b in blocks:
            rf = self._remote[int(self._file_of[b])]
            assert rf is not None
            reqs.extend(rf.requests([int(self._local[b])]))
        get_store(self.remote).prefetch(reqs)

    def _handle(self, f: int) -> Any:
        rf = self._remote[f]
        if rf is not None:
            return rf  # holds no open file
        return self._handles.get(f, lambda i: pq.ParquetFile(
            self.files[i], memory_map=True, page_checksum_verification=self.verify))

    def read_block(self, index: int) -> Block:
        f = int(self._file_of[index])
        j = int(self._local[index])
        path = self.files[f]
        try:
            table = self._handle(f).read_row_group(j, columns=self.columns)
            validate_arrow(table)
            return block_from_arrow(table, self._arrow_schema.names)
        except MixstreamError:
            raise  # worded already (a bad footer, a failed download)
        except FileNotFoundError as e:
            raise SourceError(f"{path}: file is gone ({e}); restore it") from e
        except (OSError, pa.ArrowException, ValueError) as e:
            raise SourceError(f"{path}: cannot read row group {j} ({type(e).__name__}: {e}); the "
                              f"file is corrupt or truncated") from e

    def fingerprint_parts(self) -> dict[str, Any]:
        """Each file's name (relative to the files' common folder), size and footer (the
        serialized Parquet metadata: row groups, column chunk offsets, sizes and statistics).
        Reads the footers again for local files (a few KB each)."""
        names = relative_names(self.files)
        files = []
        for i, path in enumerate(self.files):
            rf = self._remote[i]
            try:
                if rf is None:
                    size = os.path.getsize(path)
                    meta = pq.read_metadata(path)
                else:
                    size, meta = rf.size, rf.metadata
            except (OSError, pa.ArrowException) as e:
                raise SourceError(f"{path}: cannot read its footer ({e}); is it truncated?") from e
            files.append([names[i], size, footer_bytes(meta)])
        return {"kind": "parquet", "columns": self.columns, "files": files}


def relative_names(files: list[str]) -> list[str]:
    """Paths (or URLs) relative to their deepest common folder: what a copy elsewhere keeps."""
    split = [f.replace(os.sep, "/").split("/") for f in files]
    common = split[0][:-1]
    for parts in split[1:]:
        n = 0
        while n < min(len(common), len(parts) - 1) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    return ["/".join(parts[len(common):]) for parts in split]


def footer_bytes(meta: pq.FileMetaData) -> bytes:
    """The serialized (thrift) footer: pyarrow's own pickle form of ``FileMetaData``."""
    try:
        buf = meta.__reduce__()[1][0]
        return bytes(buf)
    except (AttributeError, IndexError, TypeError):  # another pyarrow: its dict form instead
        import json

        return json.dumps(meta.to_dict(), sort_keys=True, default=str).encode()


def _detect(loc: Location) -> bool:
    # last in the registry: a glob, a .parquet file, or any directory nothing else claimed
    return loc.is_glob or loc.suffix == ".parquet" or loc.is_dir


def _open(loc: Location) -> Source:
    path = loc.path.rstrip("/") if loc.is_url and loc.is_dir else loc.path
    return ParquetSource(path, remote=loc.remote, verify=loc.verify)


FORMAT = Format("parquet", _detect, _open, "Parquet files, globs and directories",
                suffixes=(".parquet",))
