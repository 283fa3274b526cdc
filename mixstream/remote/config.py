"""Settings for reading sources from fsspec URLs: cache directory, size limit, concurrency, retries."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

CACHE_ENV = "MIXSTREAM_CACHE_DIR"


def default_cache_dir() -> str:
    """``$MIXSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/mixstream``, else ``~/.cache/mixstream``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mixstream")


@dataclass(frozen=True)
class RemoteConfig:
    """How remote (URL) sources are fetched. Picklable; every process builds its own clients.

    Args:
        cache_dir: local directory shared by all workers and ranks on a machine (default:
            :func:`default_cache_dir`, resolved when the config is made). Blocks are downloaded into it once, checked, renamed.
        cache_limit_bytes: evict least recently used files above this size (``None``: no limit).
            Files being read are never evicted, so the limit is exceeded if everything in use
            does not fit.
        concurrency: downloads in flight per process (prefetch threads).
        retries: attempts per request for transient errors (timeouts, resets, 5xx, truncated
            bodies) before a :class:`~mixstream.remote.retry.RemoteError` naming the URL.
        backoff: first retry delay in seconds; doubles per attempt (full jitter), capped by
            ``max_backoff``.
        timeout: seconds without progress (connect or read) before a request counts as failed.
        whole_file_max_bytes: files up to this size are fetched in one request (and checked
            against the manifest's checksum where there is one); larger Parquet files are
            fetched per row group with range reads.
        storage_options: fsspec options per protocol, e.g.
            ``{"s3": {"endpoint_url": "http://127.0.0.1:9000"}}``.
    """

    cache_dir: str | None = None
    cache_limit_bytes: int | None = None
    concurrency: int = 4
    retries: int = 5
    backoff: float = 0.25
    max_backoff: float = 8.0
    timeout: float = 60.0
    whole_file_max_bytes: int = 16 << 20
    storage_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # resolved once, here: workers (and threads still running from earlier streams) use the
        # directory the stream was built with, whatever the environment says later
        object.__setattr__(self, "cache_dir", os.path.abspath(os.path.expanduser(
            self.cache_dir or default_cache_dir())))
        if self.concurrency < 1:
            raise ValueError(f"remote concurrency must be >= 1, got {self.concurrency}")
        if self.retries < 1:
            raise ValueError(f"remote retries must be >= 1 (attempts), got {self.retries}")
        if self.cache_limit_bytes is not None and self.cache_limit_bytes < 0:
            raise ValueError(f"cache_limit_bytes must be >= 0 or None, got {self.cache_limit_bytes}")
        if self.timeout <= 0 or self.backoff < 0:
            raise ValueError("remote timeout must be > 0 and backoff >= 0")

    @property
    def cache_root(self) -> str:
        assert self.cache_dir is not None  # set in __post_init__
        return self.cache_dir

    def token(self) -> str:
        """A stable string identifying these settings (one store per process and token)."""
        data = asdict(self)
        return json.dumps(data, sort_keys=True, default=repr)
