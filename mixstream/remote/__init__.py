"""Sources at fsspec URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://`` ...).

Files are fetched ahead of need by a bounded thread pool (:mod:`.store`) into a local cache
shared by every worker and rank on the machine (:mod:`.cache`): checked against the manifest's
size and checksum, renamed into place atomically, downloaded once per machine under a file lock,
evicted least-recently-used under a size limit. Transient errors are retried with backoff
(:mod:`.retry`); large Parquet files are read by row-group range requests (:mod:`.parquet`).
"""

from ..errors import RemoteError
from .config import RemoteConfig, default_cache_dir
from .fs import is_url
from .store import get_store

__all__ = ["RemoteConfig", "RemoteError", "default_cache_dir", "get_store", "is_url"]
