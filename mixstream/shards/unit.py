"""Convert one work unit: read its pieces, check records, tokenize and pack, write shards.

A unit's output depends only on the unit and the settings, so units can run in any process
and any order. Shards of unit ``u`` are named ``shard-<u:05d>-<k:05d>.<ext>`` in each domain
directory; tokens left over after packing (fewer than ``seq_len``) are returned so that the
caller can pack all units' leftovers, in unit order, into the domain's last shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..sources.arrow import schema_from_arrow
from .errors import SKIP_HINT, InputError, RecordError, ShardError
from .inputs import WorkUnit
from .pack import append_eos, pack, packed_table
from .readers import ReadOptions, read_piece
from .tables import ragged_array
from .tokenize import TokenizerInfo, cached_tokenizer, encode
from .validate import BadRecords, check_fields, check_text, check_utf8, split_domains
from .writer import ShardLayout, ShardSink

Report = Callable[[int, int, int], None]  # (documents, tokens, input bytes on disk)


@dataclass(frozen=True)
class ConvertSettings:
    """Everything a worker needs to convert units (picklable)."""

    output: str
    layout: ShardLayout
    schemas: tuple[pa.Schema, ...]  # per input group: the fields records may have
    origins: tuple[str, ...]  # per input group: the file the schema was taken from
    output_format: str = "parquet"  # parquet | arrow | mds
    text_field: str = "text"
    domain_field: str | None = None
    drop: tuple[str, ...] = ()
    keep_text: bool = False
    tokenizer: str | None = None
    eos_token: str | None = None
    seq_len: int | None = None
    append_eos: bool = True
    token_column: str = "input_ids"
    skip_bad: bool = False
    read: ReadOptions = field(default_factory=ReadOptions)


@dataclass
class DomainPart:
    """What one unit wrote for one domain."""

    shards: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    documents: int = 0
    empty: int = 0
    text_bytes: int = 0
    tokens: int = 0  # tokens produced, including ``remainder``
    remainder: list[int] = field(default_factory=list)
    schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    directory: str = ""  # mds: the unit's sub-directory


@dataclass
class UnitResult:
    index: int
    parts: dict[str, DomainPart]
    bad: BadRecords

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.index, "parts": {d: asdict(p) for d, p in self.parts.items()},
                "bad": {"count": self.bad.count, "examples": self.bad.examples}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitResult:
        bad = BadRecords(True, data["bad"]["count"], list(data["bad"]["examples"]))
        parts = {d: DomainPart(**p) for d, p in data["parts"].items()}
        return cls(int(data["unit"]), parts, bad)


def get_tokenizer(s: ConvertSettings) -> tuple[Any, TokenizerInfo] | None:
    """The settings' tokenizer, loaded once per process."""
    return None if s.tokenizer is None else cached_tokenizer(s.tokenizer, s.eos_token)


class DomainOut:
    """Turns checked record tables of one domain into shard rows."""

    def __init__(self, domain: str, unit: int, s: ConvertSettings) -> None:
        self.s, self.part = s, DomainPart()
        self.tok = get_tokenizer(s)
        directory = os.path.join(s.output, domain)
        token_column = s.token_column if self.tok is not None else None
        if s.output_format == "mds":
            from .mds import MDSSink

            self.part.directory = f"unit-{unit:05d}"
            self.sink: Any = MDSSink(os.path.join(directory, self.part.directory), s.layout)
        else:
            self.sink = ShardSink(directory, s.layout, prefix=f"shard-{unit:05d}",
                                  token_column=token_column)
        self.carry = np.empty(0, dtype=self.tok[1].dtype if self.tok else np.uint32)

    def add(self, table: pa.Table) -> int:
        """Write one table of records; returns the tokens produced."""
        text = table.column(self.s.text_field)
        nbytes = pc.binary_length(text)
        self.part.documents += table.num_rows
        self.part.text_bytes += int(pc.sum(nbytes).as_py() or 0)
        empty = pc.equal(nbytes, 0)
        self.part.empty += int(pc.sum(empty).as_py() or 0)
        if self.tok is None:
            self._write(table)
            return 0
        tok, info = self.tok
        if self.part.empty:
            table = table.filter(pc.invert(empty))
        values, lengths = encode(tok, table.column(self.s.text_field).to_pylist(), info.dtype)
        if info.eos_id is not None and (self.s.append_eos or self.s.seq_len):
            values, lengths = append_eos(values, lengths, info.eos_id)
        self.part.tokens += len(values)
        if self.s.seq_len:
            rows, self.carry = pack(self.carry, values, self.s.seq_len)
            if len(rows):
                self._write(packed_table(rows, self.s.token_column))
        else:
            if not self.s.keep_text:
                table = table.drop_columns([self.s.text_field])
            self._write(table.append_column(self.s.token_column, ragged_array(values, lengths)))
        return len(values)

    def _write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.sink.write(table)
            self.part.samples += table.num_rows

    def close(self) -> DomainPart:
        shards = self.sink.close()
        self.part.shards = [asdict(s) for s in shards]
        if self.sink.schema is not None:
            self.part.schema = {k: asdict(v) for k, v in schema_from_arrow(self.sink.schema).items()}
        self.part.remainder = self.carry.tolist()
        return self.part

    def abort(self) -> None:
        self.sink.abort()


def _prepare(table: pa.Table, s: ConvertSettings, group: int, where: str, locate: Any,
             bad: BadRecords) -> pa.Table:
    """Dropped fields removed, unexpected fields rejected, group types enforced, text checked."""
    keep_domain = s.domain_field
    drop = [c for c in s.drop if c in table.column_names and c != keep_domain]
    if drop:
        table = table.drop_columns(drop)
    schema = s.schemas[group]
    table = check_fields(table, schema.names, s.origins[group], locate, bad)
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise InputError(where, f"field {f.name!r} is {col.type}, but {f.type} in "
                                     f"{s.origins[group]}", "make the inputs agree, or --drop "
                                     f"{f.name}") from e
        else:
            col = pa.nulls(table.num_rows, f.type)
        columns.append(col)
    table = pa.Table.from_arrays(columns, schema=schema) if columns else table
    table = check_utf8(table, locate, bad)
    return check_text(table, s.text_field, where, locate, bad)


def run_unit(unit: WorkUnit, s: ConvertSettings, report: Report | None = None) -> UnitResult:
    """Convert ``unit``; shards are complete on disk when this returns."""
    bad = BadRecords(skip=s.skip_bad)
    outs: dict[str, DomainOut] = {}

    def out(domain: str) -> DomainOut:
        if domain not in outs:
            outs[domain] = DomainOut(domain, unit.index, s)
        return outs[domain]

    try:
        for piece in unit.pieces:
            path, rows, reported = piece.file.path, 0, 0
            bad_before = bad.count
            for chunk in read_piece(piece, s.schemas[unit.group], s.read, bad):
                rows += chunk.table.num_rows
                table = _prepare(chunk.table, s, unit.group, path, chunk.locate, bad)
                if s.domain_field is None:
                    assert unit.domain is not None
                    by_domain = {unit.domain: table}
                else:
                    by_domain = split_domains(table, s.domain_field, path, chunk.locate, bad)
                    if s.domain_field in s.drop:
                        by_domain = {d: t.drop_columns([s.domain_field])
                                     for d, t in by_domain.items()}
                tokens = sum(out(d).add(t) for d, t in by_domain.items() if t.num_rows)
                step = min(chunk.disk_bytes, piece.disk_bytes - reported)
                reported += step
                if report is not None:
                    report(table.num_rows, tokens, step)
            if piece.whole and rows == 0 and bad.count == bad_before:
                bad.add(RecordError(path, "no records (empty input)",
                                    f"remove it from the inputs, {SKIP_HINT}"))
            if report is not None:
                report(0, 0, piece.disk_bytes - reported)
        parts = {d: o.close() for d, o in sorted(outs.items())}
    except BaseException:
        for o in outs.values():
            o.abort()
        raise
    return UnitResult(unit.index, parts, bad)


def check_token_column(s: ConvertSettings) -> None:
    """Unpacked token output keeps the input fields: the token column must be a new name."""
    if not s.tokenizer or s.seq_len:
        return  # packed rows hold only the token column
    for g, schema in enumerate(s.schemas):
        kept = [n for n in schema.names if n != s.text_field or s.keep_text]
        if s.token_column in kept:
            raise ShardError(f"{s.origins[g]}: the inputs already have a field "
                             f"{s.token_column!r}; choose another name with --token-column "
                             f"or --drop it")
