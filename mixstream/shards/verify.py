"""``mixstream-shard inspect`` and ``verify``: summarise manifests, check shards against them."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SourceError
from ..sources.arrow import schema_from_arrow
from ..sources.integrity import confine, validate_arrow
from ..sources.native.byte_columns import decode
from ..sources.native.manifest import Manifest, ShardInfo, load_manifest, manifest_path
from .shardfile import count_tokens, sha256_file


def domain_dirs(paths: list[str]) -> list[str]:
    """Each path is a domain directory, or a folder whose sub-directories are domains."""
    out: list[str] = []
    for p in paths:
        if os.path.exists(manifest_path(p)):
            out.append(p)
            continue
        subs = sorted(os.path.join(p, d) for d in os.listdir(p)
                      if os.path.exists(manifest_path(os.path.join(p, d)))) if os.path.isdir(
                          p) else []
        if not subs:
            raise SourceError(f"{p}: no manifest.json here or in its sub-directories; write "
                              f"one with `mixstream-shard convert` or `mixstream-shard index`")
        out.extend(subs)
    return out


def summary(manifests: list[Manifest]) -> str:
    """A table of documents, samples, tokens and bytes per domain, then each schema."""
    def num(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else "-"

    head = ("domain", "format", "shards", "documents", "samples", "tokens", "MB")
    rows = [head]
    for m in manifests:
        st = m.stats
        nbytes = st.get("bytes", sum(s.bytes for s in m.shards))
        rows.append((m.domain, m.shard_format, num(len(m.shards)), num(st.get("documents")),
                     num(m.num_samples), num(m.num_tokens), f"{nbytes / 1e6:,.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    for m in manifests:
        cols = ", ".join(f"{k}: {v.describe()}" for k, v in m.schema.items())
        lines.append(f"{m.domain}: {cols}" + (f"  (tokens in {m.token_column})"
                                              if m.token_column else ""))
        keys = ("seq_len", "packing", "eos_id")
        ex = {k: m.extra[k] for k in keys if m.extra.get(k) is not None}
        if "tokenizer" in m.extra:
            ex["tokenizer"] = m.extra["tokenizer"].get("path")
        if ex:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in ex.items()))
    return "\n".join(lines)


def _blocks_and_schema(path: str, fmt: str) -> tuple[list[int], pa.Schema]:
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)], pf.schema_arrow
    with pa.memory_map(path) as source:
        reader = pa.ipc.open_file(source)
        blocks = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        return blocks, reader.schema


def _tokens(path: str, m: Manifest, column: str) -> int:
    if m.shard_format == "parquet":
        table = decode(pq.read_table(path, columns=[column]), m.schema, m.byte_columns)
    else:
        with pa.memory_map(path) as source:
            table = pa.ipc.open_file(source).read_all().select([column])
    validate_arrow(table)  # a corrupt length would otherwise abort the process
    return count_tokens(table, column) or 0


def check_shard(directory: str, m: Manifest, s: ShardInfo, checksum: bool) -> list[str]:
    """Problems of one shard (empty when it matches the manifest)."""
    try:
        path = confine(directory, s.path, where=manifest_path(directory))
    except SourceError as e:
        return [str(e)]
    if not os.path.exists(path):
        return [f"{path}: missing"]
    problems = []
    size = os.path.getsize(path)
    if size != s.bytes:
        problems.append(f"{path}: {size} bytes, manifest says {s.bytes}")
    if checksum and s.sha256 and sha256_file(path) != s.sha256:
        problems.append(f"{path}: sha256 differs from the manifest (corrupt or replaced)")
    try:
        blocks, schema = _blocks_and_schema(path, m.shard_format)
    except (OSError, pa.ArrowException) as e:
        return problems + [f"{path}: unreadable {m.shard_format} file ({e})"]
    if blocks != s.blocks:
        problems.append(f"{path}: blocks {blocks[:8]}… ({len(blocks)}) differ from the "
                        f"manifest's {s.blocks[:8]}… ({len(s.blocks)})")
    got = schema_from_arrow(decode(schema.empty_table(), m.schema, m.byte_columns).schema)
    if got != m.schema:
        problems.append(f"{path}: schema {({k: v.describe() for k, v in got.items()})} differs "
                        f"from the manifest's {({k: v.describe() for k, v in m.schema.items()})}")
    column = m.token_column
    if s.tokens is not None and column and column in got and got[column] == m.schema.get(column):
        try:
            n = _tokens(path, m, column)
        except (OSError, pa.ArrowException) as e:
            return problems + [f"{path}: corrupt {m.shard_format} data ({e})"]
        if n != s.tokens:
            problems.append(f"{path}: {n} tokens, manifest says {s.tokens}")
    return problems


def verify_domain(directory: str, checksum: bool = True) -> list[str]:
    """Every problem found in one domain directory."""
    try:
        m = load_manifest(directory)
    except SourceError as e:
        return [str(e)]
    problems = []
    for s in m.shards:
        problems.extend(check_shard(directory, m, s, checksum))
    where = manifest_path(directory)
    st = m.stats
    expected = {"samples": m.num_samples, "tokens": m.num_tokens,
                "bytes": sum(s.bytes for s in m.shards)}
    for key, want in expected.items():
        if key in st and st[key] != want:
            problems.append(f"{where}: stats.{key} = {st[key]}, shards add up to {want}")
    return problems
