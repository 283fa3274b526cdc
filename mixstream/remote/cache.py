"""A local block cache shared by every worker and rank on a machine.

Layout under the cache root: ``data/<key>`` (complete, verified files), ``tmp/`` (downloads in
progress), ``locks/NN`` (256 lock stripes). Protocol:

* a reader opens ``data/<key>`` and takes a shared ``flock`` on it for as long as it reads
  (a :class:`Pin`); eviction takes an exclusive non-blocking ``flock`` first, so a pinned file
  is never evicted;
* a miss takes the key's stripe lock (exclusive, blocking), looks again (another process may have
  finished meanwhile), downloads into ``tmp/``, checks size and checksum against the manifest,
  and renames into ``data/``: a half-written or corrupt file never has a ``data/`` name, and
  no two processes download the same key at once;
* after each insert, files are evicted least recently used first (mtime, touched on every
  read) until the total is under the limit.

Hand-written because no library does this: fsspec's ``filecache``/``blockcache`` have no
cross-process locking, no size limit with LRU eviction, and no checksum from our manifests;
``filelock`` has no shared locks, which "never evict a file being read" needs. POSIX only
(``fcntl.flock``).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import DownloadCorrupt

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STRIPES = 256
STALE_TMP_SECONDS = 3600
#: hash algorithms in order of preference (fastest first) when a manifest lists several
HASH_PREFERENCE = ("xxh3_64", "xxh64", "xxh128", "sha1", "md5", "sha256", "sha512", "blake2b")


@dataclass(frozen=True)
class Expect:
    """What a download must be: its size and (optionally) checksums, as the manifest says."""

    size: int | None = None
    hashes: Mapping[str, str] = field(default_factory=dict)


def _hasher(algo: str):  # type: ignore[no-untyped-def]
    if algo.startswith("xxh"):
        import xxhash

        return getattr(xxhash, algo)()
    return hashlib.new(algo)


def pick_hash(hashes: Mapping[str, str]) -> str | None:
    """The algorithm to verify with: the fastest one available that the manifest records."""
    for algo in HASH_PREFERENCE:
        if algo in hashes:
            try:
                _hasher(algo)
            except (ImportError, ValueError, AttributeError):
                continue
            return algo
    return next((a for a in hashes if a in hashlib.algorithms_available), None)


def file_digest(path: str, algo: str) -> str:
    h = _hasher(algo)
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return str(h.hexdigest())


class Pin:
    """An open cached file under a shared lock: it cannot be evicted until :meth:`close`."""

    def __init__(self, path: str, fd: int, size: int):
        self.path, self.fd, self.size = path, fd, size

    def mmap(self) -> mmap.mmap | bytes:
        """The file's bytes, memory-mapped (stay valid after close and after eviction)."""
        if self.size == 0:
            return b""
        return mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)

    def read(self) -> bytes:
        return os.pread(self.fd, self.size, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the shared lock
            self.fd = -1

    def __enter__(self) -> Pin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class BlockCache:
    """Files keyed by a string digest under ``root``; see the module docstring."""

    def __init__(self, root: str, limit_bytes: int | None = None):
        if fcntl is None:  # pragma: no cover
            raise OSError("the mixstream remote cache needs POSIX file locks (fcntl); on Windows "
                          "copy the data to local disk and pass local paths")
        self.root = root
        self.limit = limit_bytes
        for sub in ("data", "tmp", "locks"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        self.evicted = 0

    def path(self, key: str) -> str:
        return os.path.join(self.root, "data", key)

    # -- reading -----------------------------------------------------------------------------
    def open(self, key: str) -> Pin | None:
        """Pin the cached file for ``key``, or None on a miss."""
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while an evictor is unlinking it
            st = os.fstat(fd)
            if st.st_nlink == 0:  # evicted between open and lock
                os.close(fd)
                return None
            try:
                os.utime(fd)  # least recently used = oldest mtime
            except OSError:
                pass  # a cache shared between users: LRU order is best effort
        except BaseException:
            os.close(fd)
            raise
        return Pin(path, fd, st.st_size)

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Exclusive lock for downloading ``key`` (across threads and processes)."""
        stripe = int(key[:8], 16) % STRIPES
        fd = os.open(os.path.join(self.root, "locks", f"{stripe:02x}"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- writing -----------------------------------------------------------------------------
    def publish(self, key: str, write: Callable[[str], None], expect: Expect, url: str) -> int:
        """``write(tmp_path)``, verify against ``expect``, rename into place; returns bytes.

        Call under :meth:`locked`. A file that fails its check is deleted and
        :class:`DownloadCorrupt` raised (transient: the caller retries).
        """
        tmp = os.path.join(self.root, "tmp", f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            write(tmp)
            size = os.path.getsize(tmp)
            if expect.size is not None and size != expect.size:
                raise DownloadCorrupt(f"{url}: downloaded {size} bytes but the manifest says "
                                      f"{expect.size} (truncated body?)")
            algo = pick_hash(expect.hashes)
            if algo is not None:
                got = file_digest(tmp, algo)
                if got != expect.hashes[algo]:
                    raise DownloadCorrupt(f"{url}: downloaded file fails its {algo} check "
                                          f"(manifest {expect.hashes[algo]}, got {got})")
            os.replace(tmp, self.path(key))
            return size
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    # -- eviction ----------------------------------------------------------------------------
    def usage(self) -> int:
        """Bytes in ``data/``."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, str]]:
        out = []
        with os.scandir(os.path.join(self.root, "data")) as it:
            for e in it:
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime, st.st_size, e.path))
        return out

    def evict(self, protect: str | None = None) -> int:
        """Evict least recently used, unpinned files until under the limit; returns bytes freed."""
        if self.limit is None:
            return 0
        fd = os.open(os.path.join(self.root, "locks", "evict"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is evicting
            self._clean_tmp()
            entries = sorted(self._entries())
            total = sum(size for _, size, _ in entries)
            freed = 0
            keep = self.path(protect) if protect else None
            for _, size, path in entries:
                if total <= self.limit:
                    break
                if path != keep and _unlink_unpinned(path):
                    total -= size
                    freed += size
                    self.evicted += 1
            return freed
        finally:
            os.close(fd)

    def _clean_tmp(self) -> None:
        """Remove downloads left behind by crashed processes."""
        now = time.time()
        with os.scandir(os.path.join(self.root, "tmp")) as it:
            for e in it:
                try:
                    if now - e.stat().st_mtime > STALE_TMP_SECONDS:
                        os.remove(e.path)
                except FileNotFoundError:
                    pass


def _unlink_unpinned(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # pinned by a reader
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
