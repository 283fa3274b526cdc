"""The format registry: which on-disk formats a path or URL can be, in detection order.

Each entry names a module that defines ``FORMAT``, a :class:`~.location.Format`: how it
recognises a :class:`~.location.Location` (local or remote alike) and how it opens one. The
first format whose ``detect`` accepts the location opens it. Adding a format is one module
plus one line here. Modules are imported on first use (``datasets`` stays unimported until a
dataset is read).
"""

from __future__ import annotations

import importlib
import os
from functools import cache

from ..errors import SourceError
from ..remote.config import RemoteConfig
from ..remote.fs import filesystem
from .base import Source
from .location import Format, Location

FORMATS = (
    ".native",   # manifest.json
    ".mds",      # index.json
    ".hf",       # dataset_info.json / state.json
    ".npy",      # *.npy files
    ".parquet",  # last: a glob, a .parquet file, or any other directory
)  # fmt: skip


@cache
def formats() -> tuple[Format, ...]:
    """The registered formats, in detection order."""
    return tuple(importlib.import_module(m, __package__).FORMAT for m in FORMATS)


def locate(spec: str | os.PathLike[str], remote: RemoteConfig | None = None,
           verify: bool = True) -> Location:
    """A :class:`Location` for ``spec``, knowing which suffixes name files."""
    suffixes = {s for f in formats() for s in f.suffixes}
    return Location(spec, remote=remote, verify=verify, file_suffixes=suffixes)


def detect(loc: Location) -> Format | None:
    """The first format that recognises ``loc``, or None."""
    return next((f for f in formats() if f.detect(loc)), None)


def open_path(spec: str | os.PathLike[str], remote: RemoteConfig | None = None,
              verify: bool = True) -> Source:
    """The :class:`Source` for a local path, glob or fsspec URL, in whichever registered
    format recognises it; :class:`SourceError` naming the path when none does."""
    loc = locate(spec, remote, verify)
    if loc.remote is not None:
        filesystem(loc.path, loc.remote)  # a missing backend is reported for the URL as given
    elif not loc.exists:
        raise SourceError(f"{loc.path}: no such file or directory")
    fmt = detect(loc)
    if fmt is None:
        known = ", ".join(f.summary for f in formats())
        raise SourceError(f"{loc.path}: unsupported file type; MixStream reads {known} (convert "
                          f"other formats with `mixstream-shard convert`)")
    return fmt.open(loc)
