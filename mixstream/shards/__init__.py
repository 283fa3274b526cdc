"""Native shard directories: writing (:func:`write_shards`), the manifest, and the
``mixstream-shard`` tool's conversion, indexing and verification."""

from .writer import write_shards

__all__ = ["write_shards"]
