"""Parquet files at URLs: footers and row groups through the cache, by range reads.

A file up to ``RemoteConfig.whole_file_max_bytes`` is fetched whole (one request, checked
against the manifest's checksum where there is one). A larger one is read per row group: the
footer is fetched once (a cached tail range), and row group ``j`` is the byte range spanned by
its column chunks, handed to pyarrow through :class:`RangeFile` together with the parsed
metadata, so pyarrow reads nothing else.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SourceError
from .config import RemoteConfig
from .store import Request, get_store

TAIL_GUESS = 64 << 10
MAGIC = b"PAR1"


class RangeFile(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only ``[start, start + len(data))`` exists."""

    def __init__(self, size: int, start: int, data: Any, url: str):
        super().__init__()
        self._size, self._start, self._data, self._url = size, start, memoryview(data), url
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + pos
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        lo = self._pos - self._start
        if lo < 0 or lo + n > len(self._data):
            raise OSError(f"{self._url}: pyarrow read bytes {self._pos}-{self._pos + n - 1}, "
                          f"outside the fetched row group range {self._start}-"
                          f"{self._start + len(self._data) - 1}")
        self._pos += n
        return bytes(self._data[lo : lo + n])


def row_group_range(meta: pq.FileMetaData, j: int) -> tuple[int, int]:
    """``(start, stop)`` byte offsets covering every column chunk of row group ``j``."""
    rg = meta.row_group(j)
    lo, hi = None, 0
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = col.data_page_offset
        if col.has_dictionary_page and col.dictionary_page_offset:
            start = min(start, col.dictionary_page_offset)
        lo = start if lo is None else min(lo, start)
        hi = max(hi, start + col.total_compressed_size)
    return int(lo or 0), int(hi)


class RemoteParquetFile:
    """One Parquet file at a URL. Light and picklable: it holds the parsed footer, never an
    open file; a cached file is pinned only while a row group is decoded from it."""

    def __init__(self, url: str, size: int, config: RemoteConfig, *,
                 hashes: Iterable[tuple[str, str]] = (), tag: str = "",
                 metadata: pq.FileMetaData | None = None):
        self.url, self.size, self.config, self.tag = url, int(size), config, tag
        self.hashes = tuple(hashes)
        self.ranged = self.size > config.whole_file_max_bytes
        self._metadata = metadata

    def _whole_request(self) -> Request:
        return Request(self.url, size=self.size, hashes=self.hashes, tag=self.tag)

    def _range_request(self, start: int, stop: int) -> Request:
        return Request(self.url, start=start, length=stop - start, tag=f"{self.tag}:{self.size}")

    @property
    def metadata(self) -> pq.FileMetaData:
        if self._metadata is None:
            if self.ranged:
                self._metadata = self._footer()
            else:
                with get_store(self.config).fetch(self._whole_request()) as pin:
                    self._metadata = _reader(pin.mmap()).metadata
        return self._metadata

    def _footer(self) -> pq.FileMetaData:
        store = get_store(self.config)
        n = min(self.size, TAIL_GUESS)
        with store.fetch(self._range_request(self.size - n, self.size)) as pin:
            tail = pin.read()
        if self.size < 12 or tail[-4:] != MAGIC:
            raise SourceError(f"{self.url}: not a Parquet file (no PAR1 footer); is it truncated?")
        footer = int.from_bytes(tail[-8:-4], "little") + 8
        if footer > self.size - 4:
            raise SourceError(f"{self.url}: Parquet footer length {footer} exceeds the file; the "
                              f"file is corrupt or truncated")
        if footer > n:
            with store.fetch(self._range_request(self.size - footer, self.size)) as pin:
                tail = pin.read()
        try:
            return pq.read_metadata(pa.BufferReader(MAGIC + tail[-footer:]))
        except (OSError, pa.ArrowException) as e:
            raise SourceError(f"{self.url}: unreadable Parquet footer ({e}); is it truncated?") from e

    def requests(self, row_groups: Iterable[int]) -> list[Request]:
        """What reading these row groups fetches (for prefetching)."""
        if not self.ranged:
            return [self._whole_request()]
        meta = self.metadata
        return [self._range_request(*row_group_range(meta, j)) for j in row_groups]

    def read_row_group(self, j: int, columns: list[str] | None = None) -> pa.Table:
        store = get_store(self.config)
        if not self.ranged:
            with store.fetch(self._whole_request()) as pin:
                reader = _reader(pin.mmap(), self._metadata)
                self._metadata = reader.metadata
                return reader.read_row_group(j, columns=columns)
        meta = self.metadata
        start, stop = row_group_range(meta, j)
        with store.fetch(self._range_request(start, stop)) as pin:
            source = RangeFile(self.size, start, pin.mmap(), self.url)
            return pq.ParquetFile(source, metadata=meta, page_checksum_verification=True
                                  ).read_row_group(j, columns=columns)


def _reader(data: Any, metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
    """A Parquet reader over bytes of a whole file (an mmap stays valid after eviction).

    Page checksums (where the writer stored them) are verified: a range read cannot be
    checked against a whole-file hash, and plain Parquet records none."""
    return pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)), metadata=metadata,
                          page_checksum_verification=True)
