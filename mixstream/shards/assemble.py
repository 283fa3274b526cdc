"""Finish one domain after its units ran: tail shards from the units' leftover tokens (in
unit order), statistics, and the manifest (returned; the caller saves it last).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..sources.arrow import schema_from_arrow
from ..sources.base import ColumnSpec
from ..sources.native.manifest import Manifest, ShardInfo
from .errors import ShardError
from .inputs import WorkUnit
from .pack import pack, packed_table
from .tokenize import TokenizerInfo
from .unit import ConvertSettings, DomainPart
from .writer import ShardSink, byte_columns, domain_stats


@dataclass
class _Tail:
    shards: list[ShardInfo] = field(default_factory=list)
    directory: str | None = None  # mds
    rows: int = 0
    dropped: int = 0
    schema: dict[str, Any] = field(default_factory=dict)


def _tail(domain_dir: str, parts: list[DomainPart], s: ConvertSettings, dtype: np.dtype) -> _Tail:
    """Pack the units' leftover tokens, in unit order, into the domain's last shards."""
    parts = [p for p in parts if p.remainder]
    if not s.seq_len or not parts:
        return _Tail()
    rows, rest = pack(np.empty(0, dtype), np.concatenate(
        [np.asarray(p.remainder, dtype=dtype) for p in parts]), s.seq_len)
    tail = _Tail(rows=len(rows), dropped=len(rest))
    if not len(rows):
        return tail

    def rows_of(lists: list[list[int]]) -> np.ndarray:
        return pack(np.empty(0, np.uint8), np.asarray(
            [x for xs in lists for x in xs], dtype=np.uint8), s.seq_len or 1)[0]

    mask_rows = rows_of([p.remainder_mask for p in parts]) if s.instruct else None
    start_rows = (rows_of([p.remainder_starts for p in parts])
                  if s.instruct or s.document_ids else None)
    table = packed_table(rows, s.token_column, mask_rows, start_rows)
    tail.schema = {k: asdict(v) for k, v in schema_from_arrow(table.schema).items()}
    if s.output_format == "mds":
        from .mds import MDSSink

        mds = MDSSink(os.path.join(domain_dir, "unit-tail"), s.layout)
        mds.write(table)
        mds.close()
        tail.directory = "unit-tail"
        return tail
    sink = ShardSink(domain_dir, s.layout, prefix="shard-tail", token_column=s.token_column)
    sink.write(table)
    tail.shards = sink.close()
    return tail


def assemble_domain(domain: str, parts: list[tuple[WorkUnit, DomainPart]], s: ConvertSettings,
                    info: TokenizerInfo | None, extra: dict[str, Any],
                    name: str | None = None) -> tuple[dict[str, Any], Manifest | None]:
    """Tail shards, statistics and the manifest (not yet saved) of one domain.

    ``domain`` is the output sub-path (``web``, or ``web/val`` for a held-out split);
    ``name`` the domain name the manifest records (default: ``domain``)."""
    domain_dir = os.path.join(s.output, domain)
    documents = sum(p.documents for _, p in parts)
    if documents == 0:
        raise ShardError(f"domain {domain!r}: no records in its inputs (empty input)")
    schemas = {json.dumps(p.schema, sort_keys=True): u for u, p in parts if p.schema}
    if len(schemas) > 1:
        (a, ua), (b, ub) = list(schemas.items())[:2]
        raise ShardError(f"domain {domain!r}: inputs disagree on fields: "
                         f"{ua.pieces[0].file.path} gives {a}, {ub.pieces[0].file.path} gives "
                         f"{b}; make them agree or --drop the differing fields")
    dtype = info.dtype if info else np.dtype(np.uint32)
    tail = _tail(domain_dir, [p for _, p in parts], s, dtype)
    samples = sum(p.samples for _, p in parts) + tail.rows
    if samples == 0:
        raise ShardError(f"domain {domain!r}: {documents} documents but no samples "
                         f"({sum(p.tokens for _, p in parts)} tokens < --seq-len {s.seq_len}); "
                         f"use a shorter --seq-len or more data")
    shards = [ShardInfo(**d) for _, p in parts for d in p.shards] + tail.shards
    more: dict[str, Any] = {"text_bytes": sum(p.text_bytes for _, p in parts),
                            "empty_documents": sum(p.empty for _, p in parts)}
    if s.seq_len:
        more["dropped_tokens"] = tail.dropped
    if s.output_format == "mds":
        from .mds import merge

        dirs = [p.directory for _, p in parts if p.directory]
        merge(domain_dir, dirs + ([tail.directory] if tail.directory else []))
        tokens = samples * s.seq_len if s.seq_len else (
            sum(p.tokens for _, p in parts) if info else None)
        return {"documents": documents, "samples": samples, "tokens": tokens, **more}, None
    stats = domain_stats(shards, documents, **more)
    if any(p.schema for _, p in parts):
        schema = next(p.schema for _, p in parts if p.schema)
    else:  # every unit was shorter than seq_len: only the tail has rows
        schema = tail.schema
    spec = {k: ColumnSpec(**v) for k, v in schema.items()}
    manifest = Manifest(domain=name or domain, shard_format=s.output_format, schema=spec,
                        shards=shards, token_column=s.token_column if info else None,
                        stats=stats, extra=extra, byte_columns=byte_columns(s.layout, spec))
    return stats, manifest
