"""Integrity on read: file hashes checked once per process, Arrow data validated, shard paths
confined to their dataset folder, and the digests behind :meth:`Domain.fingerprint`.

Why a process-wide cache: a shard is opened again and again (handles are evicted, blocks are
read by every epoch, several sources may list one file), but its bytes need checking only once
per process. The cache key holds the file's identity on disk (device, inode, size, mtime), so a
file replaced after its check is checked again.

Why hashing is hand-written here: hashlib and xxhash do the hashing; what they lack is the
per-file cache and the error that names the file, the domain and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from ..errors import SourceError

CHUNK = 1 << 22  # 4 MiB reads while hashing
PARALLEL = max(1, min(4, os.cpu_count() or 1))  # threads hashing a window's new shards

#: hash algorithms by speed, the fastest first (MB/s on one core of a 2-core x86 box:
#: xxh3_64 ~14,800, xxh64 ~10,700, sha1 ~1,050, sha256 ~860 with SHA-NI, md5 ~430)
FAST_FIRST = ("xxh3_64", "xxh64", "xxh128", "xxh32", "sha1", "sha256", "blake2b", "sha512",
              "sha384", "sha224", "md5")

_verified: set[tuple[Any, ...]] = set()
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def _after_fork() -> None:
    """A forked child must not inherit a lock held by a hashing thread of its parent."""
    global _guard
    _guard = threading.Lock()
    _locks.clear()


os.register_at_fork(after_in_child=_after_fork)


@functools.cache
def _constructor(algo: str) -> Any:
    if algo.startswith("xxh"):
        try:
            import xxhash
        except ImportError:
            raise ValueError(f"hash {algo!r} needs the xxhash package: pip install xxhash") from None
        if not hasattr(xxhash, algo):
            raise ValueError(f"unknown xxhash algorithm {algo!r}")
        return getattr(xxhash, algo)
    if algo not in hashlib.algorithms_available or algo.startswith("shake_"):
        raise ValueError(f"unknown hash algorithm {algo!r}")
    return functools.partial(hashlib.new, algo)


def hasher(algo: str) -> Any:
    """A fresh hash object for a hashlib or xxhash algorithm name (as mosaic writes them)."""
    return _constructor(algo)()


def can_hash(algo: str) -> bool:
    try:
        _constructor(algo)
    except ValueError:
        return False
    return True


def pick_algorithm(recorded: Iterable[str]) -> str | None:
    """The fastest recorded algorithm this process can compute (None if none)."""
    names = list(recorded)
    ranked = [a for a in FAST_FIRST if a in names] + sorted(a for a in names if a not in FAST_FIRST)
    return next((a for a in ranked if can_hash(a)), None)


def hash_file(path: str, algo: str = "sha256") -> str:
    h = hasher(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return str(h.hexdigest())


def _identity(path: str) -> tuple[Any, ...]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def verify_file(path: str, algo: str, expect: str, *, listed_in: str) -> None:
    """Check ``path`` against the ``algo`` digest ``expect`` once per process.

    Raises :class:`SourceError` naming the file and the index that lists it; a missing file
    raises ``FileNotFoundError`` (the caller names what is missing)."""
    key = (*_identity(path), algo, expect.lower())
    if key in _verified:
        return
    with _guard:
        lock = _locks.setdefault(key[0], threading.Lock())
    with lock:  # two threads opening one file hash it once
        if key in _verified:
            return
        try:
            got = hash_file(path, algo)
        except ValueError as e:
            raise SourceError(f"{path}: cannot verify its {algo} ({e})") from e
        if got != expect.lower():
            raise SourceError(f"{path}: {algo} {got} differs from {expect} recorded in "
                              f"{listed_in}: the file is corrupt or was replaced; restore it or "
                              f"re-run the conversion (verify=False skips this check)")
        _verified.add(key)


def verify_files(files: list[tuple[str, str, Any]], *, listed_in: str,
                 threads: int = PARALLEL) -> None:
    """:func:`verify_file` for several files, hashed on up to ``threads`` threads (hashlib and
    xxhash release the GIL), so a window spanning many new shards waits for the slowest one
    rather than their sum. Files already checked cost one ``stat``; missing files are left
    to the read that names them."""
    todo = []
    for path, algo, expect in files:
        try:
            if (*_identity(path), algo, str(expect).lower()) not in _verified:
                todo.append((path, algo, expect))
        except OSError:
            continue
    if len(todo) <= 1 or threads <= 1:
        for path, algo, expect in todo:
            _verify_quiet(path, algo, expect, listed_in)
        return
    with ThreadPoolExecutor(min(threads, len(todo)), thread_name_prefix="mixstream-verify") as ex:
        for f in [ex.submit(_verify_quiet, p, a, e, listed_in) for p, a, e in todo]:
            f.result()


def _verify_quiet(path: str, algo: str, expect: str, listed_in: str) -> None:
    try:
        verify_file(path, algo, expect, listed_in=listed_in)
    except FileNotFoundError:
        pass  # reported by the read, with the fix


def verify_bytes(path: str, data: bytes, algo: str, expect: str, *, listed_in: str) -> None:
    """Like :func:`verify_file` for a file already read whole into ``data`` (MDS shards)."""
    key = (*_identity(path), algo, expect.lower())
    if key in _verified:
        return
    try:
        h = hasher(algo)
    except ValueError as e:
        raise SourceError(f"{path}: cannot verify its {algo} ({e})") from e
    h.update(data)
    got = str(h.hexdigest())
    if got != expect.lower():
        raise SourceError(f"{path}: {algo} {got} differs from {expect} recorded in "
                          f"{listed_in}: the file is corrupt or was replaced; restore it or "
                          f"rewrite the dataset (verify=False skips this check)")
    _verified.add(key)


def forget_verified() -> None:
    """Drop the cache of checked files (tests; a process that rewrites files in place)."""
    with _guard:
        _verified.clear()


def validate_arrow(data: pa.Table | pa.RecordBatch) -> None:
    """Full structural validation (offsets, lengths, UTF-8 ...) before any buffer reaches numpy.

    A flipped length or offset in an IPC file otherwise makes Arrow abort the process (a fatal
    check in ``Slice``) or hand out out-of-bounds memory. Costs microseconds for token
    columns (offsets only), ~8 GB/s for UTF-8 text. Raises ``pa.ArrowInvalid``."""
    data.validate(full=True)


def confine(root: str, rel: Any, *, where: str, url: bool = False) -> str:
    """``root/rel`` for a path listed in an index, refused when it leaves ``root``.

    Absolute paths and ``..`` are refused for URLs and local folders; a local path is also
    resolved (symlinks followed) and must stay inside the resolved ``root``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise SourceError(f"{where}: shard path {rel!r} is not a file name")
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith(("/", "\\")) or os.path.isabs(rel) or ".." in parts or (
            len(rel) > 1 and rel[1] == ":") or "://" in rel:
        raise SourceError(f"{where}: shard path {rel!r} points outside the dataset folder; "
                          f"shard paths must be relative names inside it")
    if url:
        return root.rstrip("/") + "/" + "/".join(p for p in parts if p not in ("", "."))
    path = os.path.join(root, *parts)
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
        raise SourceError(f"{where}: shard path {rel!r} resolves to {real}, outside the dataset "
                          f"folder {base} (a symlink?); copy the file into the folder")
    return path


def digest(obj: Any) -> str:
    """A short stable hex digest of JSON-able data (sorted keys; bytes as hex)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(x: Any) -> Any:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(x)).hexdigest()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not part of a fingerprint: {type(x).__name__}")
