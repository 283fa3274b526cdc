"""Fetching remote files and byte ranges through the shared cache, with retries and prefetch.

One :class:`RemoteStore` per process and :class:`RemoteConfig` (:func:`get_store`): it owns the
cache handle, a bounded thread pool for fetching ahead, and the set of fetches in flight, so a
block that a prefetch thread is downloading is waited for, not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .cache import BlockCache, Expect, Pin
from .config import RemoteConfig
from .fs import filesystem, to_url
from .retry import RemoteError, describe, with_retries

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """A whole file (``start is None``) or the byte range ``[start, start + length)`` of one.

    ``size`` is the expected number of bytes fetched and ``hashes`` the manifest's checksums
    (whole files only); ``tag`` (an ETag, a file size) separates versions of a file.
    """

    url: str
    start: int | None = None
    length: int | None = None
    size: int | None = None
    hashes: tuple[tuple[str, str], ...] = ()
    tag: str = ""

    @property
    def key(self) -> str:
        ident = "\0".join(map(str, (self.url, self.start, self.length, self.size, self.hashes,
                                    self.tag)))
        digest = hashlib.sha256(ident.encode()).hexdigest()[:40]
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.url.rsplit("/", 1)[-1])
        suffix = f"@{self.start}+{self.length}" if self.start is not None else ""
        return f"{digest}-{name[-60:]}{suffix}"

    @property
    def expect(self) -> Expect:
        size = self.length if self.start is not None else self.size
        return Expect(size, dict(self.hashes))

    def describe(self) -> str:
        if self.start is None:
            return self.url
        return f"{self.url} (bytes {self.start}-{self.start + (self.length or 0) - 1})"


class RemoteStore:
    """Cache + retries + bounded prefetch for one process and one :class:`RemoteConfig`."""

    def __init__(self, config: RemoteConfig):
        self.config = config
        self.cache = BlockCache(config.cache_root, config.cache_limit_bytes)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[None]] = {}
        self._pool: ThreadPoolExecutor | None = None

    # -- small uncached reads (manifests, listings) ------------------------------------------
    def retry(self, fn: Callable[[], T], url: str, what: str = "read") -> T:
        c = self.config
        return with_retries(fn, url, attempts=c.retries, backoff=c.backoff,
                            max_backoff=c.max_backoff, what=what)

    def read_small(self, url: str) -> bytes:
        """A whole small file, not cached (manifests must be fresh). ``FileNotFoundError`` if absent."""
        fs, path = filesystem(url, self.config)
        self.stats["small_reads"] += 1
        return bytes(self.retry(lambda: fs.cat_file(path), url))

    def info(self, url: str) -> dict[str, Any]:
        fs, path = filesystem(url, self.config)
        return dict(self.retry(lambda: fs.info(path), url, "stat"))

    def glob(self, url: str) -> list[tuple[str, dict[str, Any]]]:
        """Files matching a glob URL: ``(url, info)``, sorted."""
        fs, path = filesystem(url, self.config)
        found = self.retry(lambda: fs.glob(path, detail=True), url, "list")
        return _files(fs, found, url, "")

    def find(self, url: str, suffix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """Files under a directory URL (recursively) ending in ``suffix``: ``(url, info)``, sorted."""
        fs, path = filesystem(url, self.config)
        found = self.retry(lambda: fs.find(path, detail=True), url, "list")
        return _files(fs, found, url, suffix)

    # -- cached fetches ----------------------------------------------------------------------
    def fetch(self, req: Request) -> Pin:
        """Pin the cached copy of ``req``, downloading it first if needed (waits for a prefetch)."""
        pin = self.cache.open(req.key)
        if pin is not None:
            self.stats["hits"] += 1
            return pin
        with self._lock:
            fut = self._inflight.get(req.key)
        if fut is not None:
            fut.result()  # re-raises the prefetch's error (it already retried)
        for _ in range(3):
            if fut is None:
                self._download(req)
            pin = self.cache.open(req.key)
            if pin is not None:
                return pin
            fut = None  # evicted right after download (a tiny limit): fetch again
        raise RemoteError(f"{req.describe()}: downloaded but evicted at once; the cache limit "
                          f"({self.config.cache_limit_bytes} bytes) is too small for the blocks "
                          f"in use: raise cache_limit_bytes")

    def prefetch(self, reqs: Iterable[Request]) -> list[Future[None]]:
        """Start downloading ``reqs`` in the background (bounded concurrency); errors surface
        when the block is read."""
        futs = []
        for req in reqs:
            if os.path.exists(self.cache.path(req.key)):
                continue
            with self._lock:
                fut = self._inflight.get(req.key)
                started = fut is None
                if started:
                    fut = self._executor().submit(self._download, req)
                    self._inflight[req.key] = fut
            assert fut is not None
            if started:
                # outside the lock: a future that is already done runs _done (which takes the
                # lock) right here, in this thread
                fut.add_done_callback(self._done)
            futs.append(fut)
        return futs

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the store's threads (e.g. fetch a footer, then prefetch by it)."""
        return self._executor().submit(fn)

    def map(self, fn: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        """``[fn(x) for x in items]`` on the store's threads (bounded concurrency)."""
        return list(self._executor().map(fn, items))

    def _done(self, fut: Future[None]) -> None:
        with self._lock:
            for key, f in list(self._inflight.items()):
                if f is fut:
                    del self._inflight[key]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.concurrency,
                                            thread_name_prefix="mixstream-fetch")
        return self._pool

    def _download(self, req: Request) -> None:
        """Download ``req`` into the cache unless another thread or process has (stripe lock)."""
        key = req.key
        with self.cache.locked(key):
            if os.path.exists(self.cache.path(key)):
                self.stats["waited"] += 1
                return
            fs, path = filesystem(req.url, self.config)

            def write(tmp: str) -> None:
                if req.start is None:
                    fs.get_file(path, tmp)
                else:
                    assert req.length is not None
                    data = fs.cat_file(path, start=req.start, end=req.start + req.length)
                    with open(tmp, "wb") as f:
                        f.write(data)

            def attempt() -> int:
                self.stats["requests"] += 1
                try:
                    return self.cache.publish(key, write, req.expect, req.describe())
                except Exception as exc:
                    self.stats["failed_requests"] += 1
                    if isinstance(exc, FileNotFoundError):
                        raise FileNotFoundError(f"{req.url}: not found ({describe(exc)})") from exc
                    raise

            nbytes = self.retry(attempt, req.describe(), "download")
            self.stats["downloads"] += 1
            self.stats["bytes"] += nbytes
        self.cache.evict(protect=key)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _files(fs: Any, found: Any, like: str, suffix: str) -> list[tuple[str, dict[str, Any]]]:
    items = found.items() if isinstance(found, dict) else ((p, {}) for p in found)
    return sorted((to_url(fs, p, like), dict(info)) for p, info in items
                  if info.get("type", "file") == "file" and p.endswith(suffix))


_stores: dict[tuple[int, str], RemoteStore] = {}
_stores_lock = threading.Lock()


def get_store(config: RemoteConfig) -> RemoteStore:
    """The store of this process for ``config`` (a forked worker gets its own)."""
    key = (os.getpid(), config.token())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RemoteStore(config)
    return store


def _after_fork() -> None:
    global _stores_lock
    _stores_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
