"""The native mixstream format: a domain directory of ``manifest.json`` plus Parquet or Arrow
IPC shards. The manifest (:mod:`.manifest`) is the format's definition; :mod:`.reader` reads
it; :mod:`mixstream.shards` (the converter, a layer above) writes it.

Arrow IPC is not a format of its own here: it is one of the two shard encodings a manifest
names (``shard_format``), sharing the manifest, its checks and the reader.
"""

from __future__ import annotations

from ..base import Source
from ..location import Format, Location
from .manifest import MANIFEST_NAME, Manifest, ShardInfo, load_manifest, parse_manifest
from .reader import NativeSource, read_shard

__all__ = ["FORMAT", "MANIFEST_NAME", "Manifest", "NativeSource", "ShardInfo", "load_manifest",
           "parse_manifest", "read_shard"]


def _detect(loc: Location) -> bool:
    return loc.has(MANIFEST_NAME)


def _open(loc: Location) -> Source:
    data = loc.read(MANIFEST_NAME) if loc.is_url else None
    return NativeSource(loc.path.rstrip("/") if loc.is_url else loc.path, remote=loc.remote,
                        manifest_bytes=data, verify=loc.verify)


FORMAT = Format("mixstream", _detect, _open, "mixstream shard directories (manifest.json)")
