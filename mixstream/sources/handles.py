"""Open local file handles of a source: bounded, and one set per thread.

Why per thread: a pyarrow ``ParquetFile`` (``parquet::arrow::FileReader``) is not thread-safe.
Two readers sharing one handle — reader threads (``MixLoader(reader_threads=N)``), or a reader
and its background decode of the next window — deadlocked in its read cache
(``ReadRangeCache``) reading one shard at once. Opening a local shard is cheap (a memory map and
its footer), so each thread opens its own. Handles are never pickled (a worker opens its own).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any


class ThreadHandles:
    """``get(key, open_fn)``: this thread's handle for ``key``, opened on first use; at most
    ``limit`` handles are kept (the oldest are dropped; a reader still holding one keeps it)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[tuple[int, Hashable], Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, open_fn: Callable[[Any], Any]) -> Any:
        k = (threading.get_ident(), key)
        with self._lock:
            h = self._open.get(k)
        if h is None:
            h = open_fn(key)
            with self._lock:
                h = self._open.setdefault(k, h)
                while len(self._open) > self.limit:
                    self._open.pop(next(iter(self._open)))
        return h

    def __getstate__(self) -> dict:
        return {"limit": self.limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])  # type: ignore[misc]
