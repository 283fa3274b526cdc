"""URL -> fsspec filesystem, with a clear message naming the pip extra when a backend is missing."""

from __future__ import annotations

import os
import posixpath
import threading
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

from .config import RemoteConfig

#: protocol -> (package fsspec imports for it, mixstream extra that installs it)
BACKENDS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
    "http": ("aiohttp", "http"), "https": ("aiohttp", "http"),
}  # fmt: skip

_lock = threading.Lock()
_instances: dict[tuple[int, str, str], AbstractFileSystem] = {}


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` other than ``file://`` (local paths stay local)."""
    p = os.fspath(path)
    return "://" in p and not p.startswith("file://")


def local_path(path: str | os.PathLike[str]) -> str:
    """A local path with any ``file://`` prefix removed."""
    p = os.fspath(path)
    return p[len("file://"):] if p.startswith("file://") else p


def join(root: str, *parts: str) -> str:
    """Join URL path segments with ``/`` (a local root joins with ``os.path.join``)."""
    return posixpath.join(root, *parts) if is_url(root) else os.path.join(root, *parts)


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _options(protocol: str, config: RemoteConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {k: v for k, v in (config.storage_options.get(protocol) or {}).items()}
    t = config.timeout
    if protocol in ("http", "https"):
        import aiohttp

        client = dict(opts.get("client_kwargs") or {})
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t))
        opts["client_kwargs"] = client
    elif protocol in ("s3", "s3a"):
        cfg = dict(opts.get("config_kwargs") or {})
        cfg.setdefault("connect_timeout", t)
        cfg.setdefault("read_timeout", t)
        opts["config_kwargs"] = cfg
    return opts


def filesystem(url: str, config: RemoteConfig) -> tuple[AbstractFileSystem, str]:
    """The (per-process, cached) filesystem for ``url`` and the path inside it."""
    protocol = protocol_of(url)
    key = (os.getpid(), protocol, config.token())
    with _lock:
        fs = _instances.get(key)
    if fs is None:
        try:
            cls = fsspec.get_filesystem_class(protocol)
            fs = cls(**_options(protocol, config))
        except ImportError as e:
            pkg, extra = BACKENDS.get(protocol, (None, None))
            hint = (f"pip install 'mixstream[{extra}]' (or pip install {pkg})" if pkg
                    else "install the fsspec backend for it")
            raise ImportError(f"reading {url} needs the {protocol}:// filesystem backend, which is "
                              f"not installed ({e}); {hint}") from e
        except ValueError as e:
            raise ValueError(f"{url}: unknown URL scheme {protocol!r} ({e}); use a local path or "
                             f"an fsspec URL such as s3://, gs://, az://, http(s)://") from e
        with _lock:
            fs = _instances.setdefault(key, fs)
    return fs, fs._strip_protocol(url)


def to_url(fs: AbstractFileSystem, path: str, like: str) -> str:
    """The URL of ``path`` (as returned by ``fs.glob``/``fs.find``), in the scheme of ``like``."""
    if "://" in path:
        return path
    return f"{protocol_of(like)}://{path.lstrip('/')}"
