"""``mixstream-shard index``: a manifest for Parquet files another engine wrote, from footers.

Spark, Ray Data, DuckDB or pandas write the shards (this is how corpora too large for one
machine get in); indexing reads only the Parquet footers (row groups = blocks, schema) and
writes ``manifest.json`` into the directory, without touching the data. Shard paths are
relative to the directory and may lie in sub-directories.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from ..sources.arrow import schema_from_arrow
from ..sources.native.byte_columns import logical_schema
from ..sources.native.manifest import Manifest, ShardInfo, save_manifest
from .errors import InputError, ShardError
from .shardfile import count_tokens, sha256_file
from .validate import DOMAIN_NAME
from .writer import domain_stats


def find_parquet(directory: str, pattern: str = "**/*.parquet") -> list[str]:
    """Parquet files under ``directory`` (sorted; hidden and ``_``-prefixed entries skipped)."""
    out = []
    for path in glob.glob(os.path.join(directory, pattern), recursive=True):
        rel = os.path.relpath(path, directory)
        if any(p.startswith((".", "_")) for p in rel.split(os.sep)) or not os.path.isfile(path):
            continue
        out.append(rel)
    return sorted(out)


def _tokens(pf: pq.ParquetFile, column: str) -> int:
    """Tokens in ``column``: from the schema for fixed-size lists (stored as such or as bytes),
    else by reading the column."""
    t = logical_schema(pf.schema_arrow)[0].field(column).type
    if pa.types.is_fixed_size_list(t):
        return int(pf.metadata.num_rows) * int(t.list_size)
    total = 0
    for i in range(pf.num_row_groups):
        total += count_tokens(pf.read_row_group(i, columns=[column]), column) or 0
    return total


def index_directory(directory: str, *, domain: str | None = None,
                    token_column: str | None = None, checksum: bool = False,
                    pattern: str = "**/*.parquet",
                    log: Callable[[str], None] | None = None) -> Manifest:
    """Write ``<directory>/manifest.json`` for the Parquet files under it; returns it."""
    if not os.path.isdir(directory):
        raise InputError(directory, "not a directory", "give the folder holding the Parquet files")
    name = domain or os.path.basename(os.path.abspath(directory))
    if not DOMAIN_NAME.match(name):
        raise ShardError(f"domain name {name!r} is not valid; pass --domain NAME")
    files = find_parquet(directory, pattern)
    if not files:
        raise InputError(directory, f"no Parquet files match {pattern!r}",
                         "check the folder (hidden and _-prefixed files are skipped)")
    shards: list[ShardInfo] = []
    first_schema, first_path, empty = None, "", []
    byte_columns: list[str] = []
    for rel in files:
        path = os.path.join(directory, rel)
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise InputError(path, f"not a readable Parquet file ({e})",
                             "remove it or re-write it") from e
        meta = pf.metadata
        if meta.num_rows == 0:
            empty.append(rel)
            continue
        logical, stored_as_bytes = logical_schema(pf.schema_arrow)
        schema = schema_from_arrow(logical)
        if first_schema is None:
            first_schema, first_path, byte_columns = schema, rel, stored_as_bytes
            if token_column is not None and token_column not in schema:
                raise InputError(path, f"no column {token_column!r} (columns: "
                                 f"{', '.join(schema)})", "fix --token-column")
        elif schema != first_schema or stored_as_bytes != byte_columns:
            diff = sorted(k for k in set(schema) | set(first_schema)
                          if schema.get(k) != first_schema.get(k))
            raise InputError(path, f"schema differs from {first_path} in column(s) {diff}",
                             "write every file with the same schema")
        blocks = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        shards.append(ShardInfo(
            path=rel, samples=sum(blocks), blocks=blocks, bytes=os.path.getsize(path),
            sha256=sha256_file(path) if checksum else None,
            tokens=_tokens(pf, token_column) if token_column else None))
    if first_schema is None:
        raise InputError(directory, "every Parquet file is empty (0 rows)", "check the data")
    if empty and log is not None:
        log(f"mixstream-shard: skipped {len(empty)} empty Parquet file(s): {', '.join(empty[:5])}")
    manifest = Manifest(domain=name, shard_format="parquet", schema=first_schema, shards=shards,
                        token_column=token_column, stats=domain_stats(shards),
                        extra={"created_by": "mixstream-shard index", "documents": "rows",
                               "empty_files_skipped": empty}, byte_columns=byte_columns)
    save_manifest(manifest, directory)
    return manifest
