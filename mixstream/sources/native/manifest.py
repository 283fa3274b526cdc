"""The manifest of a native mixstream domain directory (``<dir>/manifest.json``): the
file-format definition, read by :mod:`.reader` and written by :mod:`mixstream.shards`.

Layout of a domain directory::

    <dir>/manifest.json
    <dir>/shard-00000.parquet     # or .arrow (Arrow IPC file format)
    <dir>/shard-00001.parquet

``manifest.json``::

    {
      "format": "mixstream", "version": 2,       # 1 when byte_columns is empty
      "domain": "code",
      "shard_format": "parquet",                  # or "arrow"
      "schema": {"input_ids": {"kind": "fixed", "dtype": "uint16", "width": 512}, ...},
      "token_column": "input_ids",                # or null
      "byte_columns": ["input_ids"],              # fixed columns a Parquet shard stores as
                                                  # bytes (see byte_columns.py); version 2 only
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

import numpy as np

from ...errors import SourceError
from ..base import ColumnSpec, Schema

MANIFEST_NAME = "manifest.json"
FORMAT = "mixstream"
VERSION = 2  # 2: byte_columns; a manifest without them is written as version 1, so readers
VERSIONS = (1, 2)  # from before byte columns still read every directory they can decode
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
    byte_columns: list[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_tokens(self) -> int | None:
        if any(s.tokens is None for s in self.shards):
            return None
        return sum(int(s.tokens or 0) for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION if self.byte_columns else 1,
            "domain": self.domain,
            "shard_format": self.shard_format,
            "schema": {k: asdict(v) for k, v in self.schema.items()},
            "token_column": self.token_column,
            "shards": [asdict(s) for s in self.shards],
            "stats": self.stats,
            "extra": self.extra,
        }
        if self.byte_columns:
            out["byte_columns"] = list(self.byte_columns)
        return out


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


#: counts beyond this are corruption, not data (and would overflow int64 sums downstream)
MAX_COUNT = 1 << 48
KINDS = ("fixed", "ragged", "scalar", "object")


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < MAX_COUNT:
        raise ValueError(f"{what} is {v!r}, not a count in [0, 2**48)")
    return v


def _opt_str(v: Any, what: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{what} is {v!r}, not a string or null")
    return v


def _dict(v: Any, what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"{what} is {type(v).__name__}, not an object")
    return dict(v)


def _column(name: Any, v: Any) -> ColumnSpec:
    if not isinstance(name, str) or not name:
        raise ValueError(f"schema column name {name!r} is not a string")
    if not isinstance(v, dict):
        raise ValueError(f"schema[{name!r}] is not an object")
    kind, dtype, width = v.get("kind"), v.get("dtype"), v.get("width")
    if kind not in KINDS:
        raise ValueError(f"schema[{name!r}].kind is {kind!r}, not one of {KINDS}")
    if not isinstance(dtype, str) or not dtype:
        raise ValueError(f"schema[{name!r}].dtype is {dtype!r}, not a type name")
    if kind != "object":
        try:
            np.dtype(dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"schema[{name!r}].dtype {dtype!r} is not a numpy type") from e
    if kind == "fixed":
        width = _count(width, f"schema[{name!r}].width")
    elif width is not None:
        raise ValueError(f"schema[{name!r}].width is {width!r}; only fixed columns have one")
    return ColumnSpec(kind, dtype, width)


def _byte_columns(v: Any, schema: Schema, shard_format: str, version: int) -> list[str]:
    if v is None:
        return []
    if version < 2:
        raise ValueError("'byte_columns' needs manifest version 2")
    if not isinstance(v, list) or shard_format != "parquet":
        raise ValueError(f"'byte_columns' is {v!r}; a list of fixed columns of Parquet shards")
    for name in v:
        spec = schema.get(name) if isinstance(name, str) else None
        if spec is None or spec.kind != "fixed" or np.dtype(spec.dtype).kind not in "iuf":
            raise ValueError(f"byte_columns names {name!r}, not a fixed numeric column of the "
                             f"schema")
    return list(v)


def _shard(i: int, v: Any) -> ShardInfo:
    where = f"shards[{i}]"
    if not isinstance(v, dict):
        raise ValueError(f"{where} is not an object")
    path = v.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}.path is {path!r}, not a file name")
    blocks = v.get("blocks")
    if not isinstance(blocks, list):
        raise ValueError(f"{where}.blocks is {type(blocks).__name__}, not a list of row counts")
    blocks = [_count(b, f"{where}.blocks[{j}]") for j, b in enumerate(blocks)]
    samples = _count(v.get("samples"), f"{where}.samples")
    if sum(blocks) != samples:
        raise ValueError(f"shard {path}: block sizes sum to {sum(blocks)}, not {samples}")
    sha = _opt_str(v.get("sha256"), f"{where}.sha256")
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha)):
        raise ValueError(f"{where}.sha256 is {sha!r}, not 64 hex digits")
    tokens = v.get("tokens")
    return ShardInfo(path=path, samples=samples, blocks=blocks,
                     bytes=_count(v.get("bytes"), f"{where}.bytes"), sha256=sha,
                     tokens=None if tokens is None else _count(tokens, f"{where}.tokens"))


def parse_manifest(data: Any, where: str) -> Manifest:
    """Validate a decoded manifest; ``where`` names the file in errors.

    Every field is type- and range-checked here, so a damaged manifest is one
    :class:`SourceError` naming the file, never a ``TypeError`` or an overflow later. Shard
    paths are checked to stay inside the directory by the reader (which knows the folder)."""

    def bad(msg: str) -> SourceError:
        return SourceError(f"{where}: {msg}; rewrite it with mixstream.write_shards or "
                           f"`mixstream-shard index`")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad("not a mixstream manifest (missing \"format\": \"mixstream\")")
    version = data.get("version")
    if version not in VERSIONS or isinstance(version, bool):
        raise bad(f"unsupported manifest version {version!r} (this reader: {VERSIONS}); a "
                  f"newer mixstream wrote it: upgrade mixstream")
    try:
        shard_format = data.get("shard_format")
        if not isinstance(shard_format, str) or shard_format not in SHARD_FORMATS:
            raise bad(f"unknown shard_format {shard_format!r} (expected one of {SHARD_FORMATS})")
        schema_obj = data.get("schema")
        if not isinstance(schema_obj, dict) or not schema_obj:
            raise ValueError("'schema' is missing or not a non-empty object")
        schema = {k: _column(k, v) for k, v in schema_obj.items()}
        shards_obj = data.get("shards")
        if not isinstance(shards_obj, list):
            raise ValueError("'shards' is missing or not a list")
        shards = [_shard(i, s) for i, s in enumerate(shards_obj)]
        domain = data.get("domain")
        if not isinstance(domain, (str, int)) or isinstance(domain, bool):
            raise ValueError(f"'domain' is {domain!r}, not a name")
        token_column = _opt_str(data.get("token_column"), "token_column")
        byte_columns = _byte_columns(data.get("byte_columns"), schema, shard_format, version)
        return Manifest(
            domain=str(domain),
            shard_format=shard_format,
            schema=schema,
            shards=shards,
            token_column=token_column,
            stats=_dict(data.get("stats"), "stats"),
            extra=_dict(data.get("extra"), "extra"),
            byte_columns=byte_columns,
        )
    except SourceError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as e:
        raise bad(f"malformed ({e})") from e


def load_manifest(directory: str) -> Manifest:
    path = manifest_path(directory)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise SourceError(f"{path}: no manifest; write the directory with mixstream.write_shards "
                          f"or index existing Parquet with `mixstream-shard index`") from e
    except IsADirectoryError as e:
        raise SourceError(f"{path}: is a directory, not a manifest file") from e
    except (ValueError, RecursionError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise SourceError(f"{path}: unreadable manifest ({e}); re-create it with "
                          f"`mixstream-shard index`") from e
    return parse_manifest(data, path)
