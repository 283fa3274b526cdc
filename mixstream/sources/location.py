"""Where a domain's data lives, as the format registry sees it, and what a format registers.

A :class:`Location` answers the few questions formats ask to recognise their data (is it a
directory, a glob, which suffix, does the directory hold ``name``, which files does it hold)
the same way for a local path and an fsspec URL, so a format's detection is written once.
Answers are cached: detection reads a marker file (a manifest) once, and the format that
claims it opens from the same bytes.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..remote.config import RemoteConfig
from ..remote.fs import is_url, join, local_path
from ..remote.store import get_store
from .base import Source

GLOB_CHARS = "*?["


class Location:
    """A path or URL a user named for a domain (or one of its sources).

    ``file_suffixes`` are the suffixes that name a file, never a directory: a URL ending in one
    is not probed for marker files (an object store cannot tell a directory from a prefix)."""

    def __init__(self, spec: str | os.PathLike[str], *, remote: RemoteConfig | None = None,
                 verify: bool = True, file_suffixes: Iterable[str] = ()):
        self.path = local_path(spec)
        self.is_url = is_url(self.path)
        self.remote = (remote or RemoteConfig()) if self.is_url else None
        self.verify = bool(verify)
        tail = self.path.split("://", 1)[1] if self.is_url else self.path
        self.is_glob = any(c in tail for c in GLOB_CHARS)
        name = tail.rstrip("/").replace(os.sep, "/").rsplit("/", 1)[-1]
        self.suffix = posixpath.splitext(name)[1].lower()
        if self.is_glob:
            self.is_dir = False
        elif self.is_url:
            self.is_dir = self.suffix not in set(file_suffixes)
        else:
            self.is_dir = os.path.isdir(self.path)
        self._read: dict[str, bytes | None] = {}
        self._files: list[str] | None = None

    @property
    def exists(self) -> bool:
        """False only for a local path that names nothing (a URL or a glob is taken as given)."""
        return self.is_url or self.is_glob or os.path.exists(self.path)

    def read(self, name: str) -> bytes | None:
        """The small file ``name`` in this directory (a manifest, an index), None if absent."""
        if not self.is_dir:
            return None
        if name not in self._read:
            path = join(self.path.rstrip("/") if self.is_url else self.path, name)
            try:
                if self.remote is not None:
                    self._read[name] = get_store(self.remote).read_small(path)
                else:
                    with open(path, "rb") as f:
                        self._read[name] = f.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                self._read[name] = None
        return self._read[name]

    def has(self, name: str) -> bool:
        """Whether this directory holds ``name``; a local check reads nothing."""
        if self.remote is None:
            return self.is_dir and os.path.exists(os.path.join(self.path, name))
        return self.read(name) is not None

    def files(self) -> list[str]:
        """Names of the files directly in this directory (not hidden), sorted; ``[]`` if it
        is not a directory or cannot be listed (an HTTP server without listings)."""
        if self._files is None:
            self._files = []
            if self.is_dir and self.remote is None:
                self._files = sorted(n for n in os.listdir(self.path) if not n.startswith(".")
                                     and os.path.isfile(os.path.join(self.path, n)))
            elif self.is_dir and self.remote is not None:
                root = self.path.rstrip("/")
                try:
                    found = get_store(self.remote).find(root)
                except (OSError, ValueError, NotImplementedError):
                    found = []
                rel = [url[len(root):].lstrip("/") for url, _ in found if url.startswith(root)]
                self._files = sorted(n for n in rel if n and "/" not in n and not n.startswith("."))
        return self._files

    def __repr__(self) -> str:
        return f"Location({self.path!r})"


@dataclass(frozen=True)
class Format:
    """One on-disk format, as the registry (:mod:`.registry`) knows it.

    ``detect`` recognises a :class:`Location` (cheaply: names, marker files, a listing);
    ``open`` makes the :class:`Source`. ``suffixes`` name single files of the format (so a URL
    ending so is a file, not a directory). ``summary`` names the format in the error for a
    path nothing recognises."""

    name: str
    detect: Callable[[Location], bool]
    open: Callable[[Location], Source]
    summary: str
    suffixes: tuple[str, ...] = ()
