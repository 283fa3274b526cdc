"""The manifest of a native mixstream domain directory (``<dir>/manifest.json``).

Layout of a domain directory::

    <dir>/manifest.json
    <dir>/shard-00000.parquet     # or .arrow (Arrow IPC file format)
    <dir>/shard-00001.parquet

``manifest.json``::

    {
      "format": "mixstream", "version": 1,
      "domain": "code",
      "shard_format": "parquet",                  # or "arrow"
      "schema": {"input_ids": {"kind": "fixed", "dtype": "uint16", "width": 512}, ...},
      "token_column": "input_ids",                # or null
      "shards": [{"path": "shard-00000.parquet", "samples": 4096,
                  "blocks": [1024, 1024, 1024, 1024],   # row groups / record batches
                  "bytes": 2097152, "sha256": "...", "tokens": 2097152}],
      "stats": {"documents": 812, "samples": 4096, "tokens": 2097152, "bytes": 2097152},
      "extra": {...}                              # free-form: tokenizer, seq_len, eos_id ...
    }

Blocks are Parquet row groups or Arrow IPC record batches, in file order.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..sources.base import ColumnSpec, Schema, SourceError

MANIFEST_NAME = "manifest.json"
FORMAT = "mixstream"
VERSION = 1
SHARD_FORMATS = ("parquet", "arrow")


@dataclass
class ShardInfo:
    path: str  # relative to the domain directory
    samples: int
    blocks: list[int]
    bytes: int
    sha256: str | None = None
    tokens: int | None = None


@dataclass
class Manifest:
    domain: str
    shard_format: str
    schema: Schema
    shards: list[ShardInfo]
    token_column: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_tokens(self) -> int | None:
        if any(s.tokens is None for s in self.shards):
            return None
        return sum(int(s.tokens or 0) for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "domain": self.domain,
            "shard_format": self.shard_format,
            "schema": {k: asdict(v) for k, v in self.schema.items()},
            "token_column": self.token_column,
            "shards": [asdict(s) for s in self.shards],
            "stats": self.stats,
            "extra": self.extra,
        }


def manifest_path(directory: str) -> str:
    return os.path.join(directory, MANIFEST_NAME)


def save_manifest(manifest: Manifest, directory: str) -> str:
    """Write ``manifest.json`` atomically (temp file + rename); returns its path."""
    path = manifest_path(directory)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_json(), f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def parse_manifest(data: Any, where: str) -> Manifest:
    """Validate a decoded manifest; ``where`` names the file in errors."""

    def bad(msg: str) -> SourceError:
        return SourceError(f"{where}: {msg}; rewrite it with mixstream.write_shards or "
                           f"`mixstream-shard index`")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad("not a mixstream manifest (missing \"format\": \"mixstream\")")
    if data.get("version") != VERSION:
        raise bad(f"unsupported manifest version {data.get('version')!r} (this reader: {VERSION})")
    try:
        shard_format = data["shard_format"]
        if shard_format not in SHARD_FORMATS:
            raise bad(f"unknown shard_format {shard_format!r} (expected one of {SHARD_FORMATS})")
        schema = {k: ColumnSpec(**v) for k, v in data["schema"].items()}
        shards = [ShardInfo(**s) for s in data["shards"]]
        for s in shards:
            if sum(s.blocks) != s.samples:
                raise bad(f"shard {s.path}: block sizes sum to {sum(s.blocks)}, not {s.samples}")
        return Manifest(
            domain=str(data["domain"]),
            shard_format=shard_format,
            schema=schema,
            shards=shards,
            token_column=data.get("token_column"),
            stats=dict(data.get("stats") or {}),
            extra=dict(data.get("extra") or {}),
        )
    except SourceError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"malformed ({type(e).__name__}: {e})") from e


def load_manifest(directory: str) -> Manifest:
    path = manifest_path(directory)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise SourceError(f"{path}: no manifest; write the directory with mixstream.write_shards "
                          f"or index existing Parquet with `mixstream-shard index`") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: unreadable manifest ({e}); re-create it with "
                          f"`mixstream-shard index`") from e
    return parse_manifest(data, path)
