"""Native mixstream domain directories: a manifest plus Parquet or Arrow IPC shards.

The directory may be local or an fsspec URL (``s3://``, ``gs://``, ``http(s)://`` ...). Remote
shards are fetched through the shared cache (:mod:`mixstream.remote`): whole, checked against
the manifest's size and sha256, or, for Parquet shards above ``whole_file_max_bytes``, per row
group with range reads.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import MixstreamError, SourceError
from ...remote.config import RemoteConfig
from ...remote.fs import is_url, join, local_path
from ...remote.parquet import RemoteParquetFile
from ...remote.store import Request, get_store
from ..arrow import block_from_arrow, schema_from_arrow
from ..base import Block, Schema, Source
from ..handles import ThreadHandles
from ..integrity import confine, validate_arrow, verify_file, verify_files
from .byte_columns import decode
from .manifest import MANIFEST_NAME, Manifest, load_manifest, parse_manifest

MAX_OPEN = 8  # open local shards per reader thread (ThreadHandles keeps 4 threads' worth)


def load_remote_manifest(url: str, remote: RemoteConfig, data: bytes | None = None) -> Manifest:
    """``<url>/manifest.json`` through the store (retried, not cached)."""
    path = join(url, MANIFEST_NAME)
    if data is None:
        try:
            data = get_store(remote).read_small(path)
        except FileNotFoundError as e:
            raise SourceError(f"{path}: no manifest; write the directory with "
                              f"mixstream.write_shards or index existing Parquet with "
                              f"`mixstream-shard index`") from e
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise SourceError(f"{path}: unreadable manifest ({e}); re-create it with "
                          f"`mixstream-shard index`") from e
    return parse_manifest(obj, path)


class NativeSource(Source):
    """A directory written by :func:`mixstream.write_shards` or indexed by ``mixstream-shard``.

    Sample counts come from the manifest, so construction opens no shard. Shard sizes are
    checked against the manifest (a truncated or replaced shard is reported up front; for a URL,
    where the listing gives sizes, and always when a shard is downloaded).

    ``verify`` (default on): a local shard whose manifest entry records a sha256 is hashed
    when this process first opens it (once per file per process, ~0.9 GB/s), so flipped bytes
    are a :class:`SourceError`, never data. Remote shards are checked on download whatever
    ``verify`` says. Every block is also validated structurally (Arrow ``validate(full=True)``)
    before it is decoded, so corrupt bytes can never abort the process.
    """

    def __init__(self, directory: str | os.PathLike[str], *, check_sizes: bool = True,
                 remote: RemoteConfig | None = None, manifest_bytes: bytes | None = None,
                 verify: bool = True):
        self.uri = local_path(directory)
        self.verify = bool(verify)
        self.remote = (remote or RemoteConfig()) if is_url(self.uri) else None
        if self.remote is not None:
            self.manifest: Manifest = load_remote_manifest(self.uri, self.remote, manifest_bytes)
        else:
            self.manifest = load_manifest(self.uri)
        where = join(self.uri, MANIFEST_NAME)
        self._files: list[str] = []
        shard_of: list[int] = []
        local: list[int] = []
        sizes: list[int] = []
        for i, shard in enumerate(self.manifest.shards):
            path = confine(self.uri, shard.path, where=where, url=self.remote is not None)
            self._files.append(path)
            if check_sizes and self.remote is None:
                self._check_local(path, shard.bytes)
            for j, n in enumerate(shard.blocks):
                shard_of.append(i)
                local.append(j)
                sizes.append(n)
        if check_sizes and self.remote is not None:
            self._check_remote()
        self._shard_of = np.asarray(shard_of, dtype=np.int64)
        self._local = np.asarray(local, dtype=np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._open: dict[int, Any] = {}  # remote handles: a parsed footer, shared and pickled
        self._lock = threading.Lock()
        self._local_handles = ThreadHandles(MAX_OPEN * 4)

    def _check_local(self, path: str, expect: int) -> None:
        try:
            actual = os.path.getsize(path)
        except OSError as e:
            raise SourceError(f"{path}: shard listed in {self.uri}/manifest.json is missing "
                              f"({e.strerror}); restore it or re-run the conversion") from e
        if expect and actual != expect:
            raise SourceError(f"{path}: {actual} bytes on disk but the manifest says "
                              f"{expect} (truncated or replaced?); re-run the conversion "
                              f"or `mixstream-shard verify {self.uri}`")

    def _check_remote(self) -> None:
        """One listing of the directory; checks the shards whose size it reports."""
        assert self.remote is not None
        if self.uri.startswith(("http://", "https://")):
            return  # HTTP listings (HTML pages) carry no sizes
        try:
            listed = dict(get_store(self.remote).find(self.uri.rstrip("/")))
        except (OSError, ValueError, NotImplementedError):
            return  # no listing (a plain HTTP server): sizes are checked on download
        sizes = {url: info.get("size") for url, info in listed.items()}
        if not sizes:
            return
        for path, shard in zip(self._files, self.manifest.shards):
            actual = sizes.get(path, "missing")
            if actual == "missing" and any(v is not None for v in sizes.values()):
                raise SourceError(f"{path}: shard listed in {self.uri}/manifest.json is not in "
                                  f"the directory listing; upload it or re-run the conversion")
            if isinstance(actual, int) and shard.bytes and actual != shard.bytes:
                raise SourceError(f"{path}: {actual} bytes at the remote but the manifest says "
                                  f"{shard.bytes} (truncated or replaced?); upload it again or "
                                  f"re-run the conversion")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = dict(self._open)  # remote footers only: local handles are per thread
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

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

    def stats(self) -> dict[str, int | None]:
        """The manifest's counts (documents and bytes are known only from a manifest)."""
        out = super().stats()
        for key in ("tokens", "bytes", "documents"):
            v = self.manifest.stats.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                out[key] = v
        return out

    # -- opening shards ----------------------------------------------------------------------
    def _remote_request(self, shard: int) -> Request:
        info = self.manifest.shards[shard]
        hashes = (("sha256", info.sha256),) if info.sha256 else ()
        return Request(self._files[shard], size=info.bytes or None, hashes=hashes)

    def _remote_file(self, shard: int) -> RemoteParquetFile:
        assert self.remote is not None
        info = self.manifest.shards[shard]
        req = self._remote_request(shard)
        return RemoteParquetFile(req.url, info.bytes, self.remote, hashes=req.hashes)

    def _new_handle(self, shard: int) -> Any:
        path = self._files[shard]
        parquet = self.manifest.shard_format == "parquet"
        if self.remote is None:
            sha = self.manifest.shards[shard].sha256
            if self.verify and sha:
                verify_file(path, "sha256", sha, listed_in=join(self.uri, MANIFEST_NAME))
            if parquet:
                return pq.ParquetFile(path, memory_map=True,
                                      page_checksum_verification=self.verify)
            return pa.ipc.open_file(pa.memory_map(path, "r"))
        if parquet:
            return self._remote_file(shard)
        return _RemoteArrow(self._remote_request(shard), self.remote)

    def _handle(self, shard: int) -> Any:
        if self.remote is None:  # one handle per thread (see sources/handles.py)
            return self._local_handles.get(shard, self._new_handle)
        with self._lock:  # remote handles open no file and read through a new reader per call
            h = self._open.get(shard)
        if h is None:
            h = self._new_handle(shard)
            with self._lock:
                h = self._open.setdefault(shard, h)
        return h

    def prefetch(self, blocks: Sequence[int]) -> None:
        """Start fetching the shards (or row groups) of ``blocks`` in the background; local
        shards not yet checked in this process are hashed now, several at once."""
        if self.remote is None:
            if self.verify and len(blocks):
                new = sorted({int(self._shard_of[b]) for b in blocks})
                verify_files([(self._files[i], "sha256", self.manifest.shards[i].sha256)
                              for i in new if self.manifest.shards[i].sha256],
                             listed_in=join(self.uri, MANIFEST_NAME))
            return
        if not len(blocks):
            return
        store = get_store(self.remote)
        reqs: list[Request] = []
        shards: dict[int, list[int]] = {}
        for b in blocks:
            shards.setdefault(int(self._shard_of[b]), []).append(int(self._local[b]))
        for shard, groups in shards.items():
            info = self.manifest.shards[shard]
            if self.manifest.shard_format == "parquet" and info.bytes > self.remote.whole_file_max_bytes:
                # row-group ranges need the footer: fetch it on a pool thread, then prefetch
                store.submit(partial(_prefetch_ranges, store, self._handle(shard), groups))
            else:
                reqs.append(self._remote_request(shard))
        store.prefetch(reqs)

    def read_block(self, index: int) -> Block:
        shard = int(self._shard_of[index])
        j = int(self._local[index])
        path = self._files[shard]
        try:
            h = self._handle(shard)
            if self.manifest.shard_format == "parquet":
                data = decode(h.read_row_group(j), self.manifest.schema,
                              self.manifest.byte_columns)
            else:
                data = h.get_batch(j)
            validate_arrow(data)
            self._check_schema(data.schema, path)
            block = block_from_arrow(data, list(self.manifest.schema))
        except MixstreamError:
            raise  # worded already (a corrupt shard, a failed download)
        except FileNotFoundError as e:
            raise SourceError(f"{path}: shard listed in {self.uri}/manifest.json is missing "
                              f"({e}); restore it or re-run the conversion") from e
        except (OSError, pa.ArrowException, ValueError, KeyError, IndexError) as e:
            raise SourceError(f"{path}: cannot read block {j} ({type(e).__name__}: {e}); the shard "
                              f"is corrupt or truncated: re-run the conversion") from e
        if data.num_rows != self._sizes[index]:
            raise SourceError(f"{path}: block {j} has {data.num_rows} rows, the manifest says "
                              f"{self._sizes[index]}; re-run the conversion")
        return block

    def _check_schema(self, schema: pa.Schema, path: str) -> None:
        """Column types as the manifest says (a flipped type byte decodes to other values)."""
        want = self.manifest.schema
        got = schema_from_arrow(schema)
        if any(got.get(k) != v for k, v in want.items()):
            have = {k: got[k].describe() for k in want if k in got}
            raise SourceError(f"{path}: columns {have} differ from the manifest's "
                              f"{ {k: v.describe() for k, v in want.items()} }; the shard is "
                              f"corrupt or was replaced: re-run the conversion")

    def fingerprint_parts(self) -> dict[str, Any]:
        """Corpus identity from the manifest: shard names, block sizes, bytes and sha256s
        (no paths above the directory, no mtimes: a copied directory gives the same)."""
        m = self.manifest
        return {"kind": "mixstream", "shard_format": m.shard_format,
                "schema": {k: [v.kind, v.dtype, v.width] for k, v in m.schema.items()},
                "shards": [[s.path, s.blocks, s.bytes, s.sha256, s.tokens] for s in m.shards]}


def read_shard(directory: str | os.PathLike[str], path: str) -> pa.Table:
    """One local shard of a domain directory as a table with the manifest's column types
    (byte-encoded columns decoded): how other code should read native shards."""
    m = load_manifest(os.fspath(directory))
    full = confine(os.fspath(directory), path, where=join(os.fspath(directory), MANIFEST_NAME))
    if m.shard_format == "parquet":
        return decode(pq.read_table(full), m.schema, m.byte_columns)
    with pa.memory_map(full) as source:
        return pa.ipc.open_file(source).read_all()


def _prefetch_ranges(store: Any, rf: RemoteParquetFile, groups: list[int]) -> None:
    store.prefetch(rf.requests(groups))


class _RemoteArrow:
    """An Arrow IPC shard at a URL: each batch is read from the cached file, pinned meanwhile."""

    def __init__(self, request: Request, remote: RemoteConfig):
        self.request, self.remote = request, remote

    def get_batch(self, j: int) -> pa.RecordBatch:
        with get_store(self.remote).fetch(self.request) as pin:
            return pa.ipc.open_file(pa.BufferReader(pa.py_buffer(pin.mmap()))).get_batch(j)
