"""Convert one work unit: read its pieces, check records, tokenize and pack, write shards.

A unit's output depends only on the unit and the settings, so units can run in any process
and any order. Shards of unit ``u`` are named ``shard-<u:05d>-<k:05d>.<ext>`` in each domain
directory; tokens left over after packing (fewer than ``seq_len``) are returned so that the
caller can pack all units' leftovers, in unit order, into the domain's last shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..sources.arrow import schema_from_arrow
from .chat import ChatTemplate
from .errors import SKIP_HINT, InputError, RecordError, ShardError
from .inputs import WorkUnit
from .instruct import (
    DOCUMENT_IDS,
    HIDDEN,
    LOSS_MASK,
    SPANS,
    TEXT,
    content_fields,
    encode_masked,
    prepare_chat,
    prepare_pairs,
)
from .pack import append_each, append_eos, document_starts, pack, packed_table
from .readers import ReadOptions, read_piece
from .split import ValSplit, document_hashes, smallest, val_key
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
    prompt_field: str | None = None  # instruction data: prompt/response records …
    response_field: str | None = None
    messages_field: str | None = None  # … or chat messages, rendered with chat_template
    chat_template: ChatTemplate | None = None
    document_ids: bool = False  # packed plain text: also write document_ids
    val: ValSplit | None = None  # held-out split per domain

    @property
    def instruct(self) -> bool:
        return bool(self.messages_field or self.prompt_field)

    @property
    def content(self) -> tuple[str, ...]:
        """The fields holding each record's content."""
        return content_fields(self.prompt_field, self.response_field, self.messages_field,
                              self.text_field)


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
    remainder_mask: list[int] = field(default_factory=list)  # instruction data
    remainder_starts: list[int] = field(default_factory=list)  # with document ids
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
        self.mask_carry = np.empty(0, dtype=np.uint8) if s.instruct else None
        self.starts_carry = (np.empty(0, dtype=np.uint8)
                             if s.seq_len and (s.instruct or s.document_ids) else None)

    def add(self, table: pa.Table) -> int:
        """Write one table of records; returns the tokens produced."""
        s = self.s
        text_field = TEXT if s.instruct else s.text_field
        text = table.column(text_field)
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
        texts = table.column(text_field).to_pylist()
        mask: np.ndarray | None = None
        if s.instruct:
            values, lengths, mask = encode_masked(tok, texts, table.column(SPANS).to_pylist(),
                                                  info.dtype)
        else:
            values, lengths = encode(tok, texts, info.dtype)
        if info.eos_id is not None and eos_after_documents(s):
            if mask is not None:  # the model learns to stop: EOS is trained on
                mask = append_each(mask, lengths, 1)
            values, lengths = append_eos(values, lengths, info.eos_id)
        self.part.tokens += len(values)
        if s.seq_len:
            rows, self.carry = pack(self.carry, values, s.seq_len)
            mask_rows = start_rows = None
            if self.mask_carry is not None and mask is not None:
                mask_rows, self.mask_carry = pack(self.mask_carry, mask, s.seq_len)
            if self.starts_carry is not None:
                start_rows, self.starts_carry = pack(self.starts_carry,
                                                     document_starts(lengths), s.seq_len)
            if len(rows):
                self._write(packed_table(rows, s.token_column, mask_rows, start_rows))
        else:
            drop = [c for c in HIDDEN if c in table.column_names]
            if not s.keep_text:
                drop += [c for c in s.content if c in table.column_names]
            table = table.drop_columns(drop).append_column(s.token_column,
                                                           ragged_array(values, lengths))
            if mask is not None:
                table = table.append_column(LOSS_MASK, ragged_array(mask, lengths))
            self._write(table)
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
        if self.mask_carry is not None:
            self.part.remainder_mask = self.mask_carry.tolist()
        if self.starts_carry is not None and len(self.starts_carry):
            # the leftover may begin inside a document whose start is in a full row: in the
            # domain's tail it follows another unit's leftover, so it must start a segment
            self.starts_carry[0] = 1
            self.part.remainder_starts = self.starts_carry.tolist()
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
    if s.messages_field:
        assert s.chat_template is not None
        return prepare_chat(table, s.messages_field, s.chat_template, where, locate, bad)
    if s.prompt_field and s.response_field:
        return prepare_pairs(table, s.prompt_field, s.response_field, where, locate, bad,
                             s.chat_template)
    return check_text(table, s.text_field, where, locate, bad)


def iter_unit(unit: WorkUnit, s: ConvertSettings,
              bad: BadRecords) -> Iterator[tuple[dict[str, pa.Table], int, int]]:
    """``(checked tables by domain, records read, input bytes covered)`` per chunk of ``unit``."""
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
            step = min(chunk.disk_bytes, piece.disk_bytes - reported)
            reported += step
            yield {d: t for d, t in by_domain.items() if t.num_rows}, table.num_rows, step
        if piece.whole and rows == 0 and bad.count == bad_before:
            bad.add(RecordError(path, "no records (empty input)",
                                f"remove it from the inputs, {SKIP_HINT}"))
        yield {}, 0, piece.disk_bytes - reported


def _text_column(s: ConvertSettings) -> str:
    return TEXT if s.instruct else s.text_field


def run_unit(unit: WorkUnit, s: ConvertSettings, report: Report | None = None) -> UnitResult:
    """Convert ``unit``; shards are complete on disk when this returns."""
    bad = BadRecords(skip=s.skip_bad)
    outs: dict[str, DomainOut] = {}

    def add(key: str, table: pa.Table) -> int:
        if not table.num_rows:
            return 0
        if key not in outs:
            outs[key] = DomainOut(key, unit.index, s)
        return outs[key].add(table)

    try:
        for by_domain, records, step in iter_unit(unit, s, bad):
            tokens = 0
            for d, t in by_domain.items():
                if s.val is None:
                    tokens += add(d, t)
                    continue
                held = pa.array(s.val.held_out(d, t.column(_text_column(s))))
                tokens += add(d, t.filter(pc.invert(held))) + add(val_key(d), t.filter(held))
            if report is not None:
                report(records, tokens, step)
        parts = {d: o.close() for d, o in sorted(outs.items())}
    except BaseException:
        for o in outs.values():
            o.abort()
        raise
    return UnitResult(unit.index, parts, bad)


def select_unit(unit: WorkUnit, s: ConvertSettings,
                report: Report | None = None) -> dict[str, tuple[int, list[int]]]:
    """Pre-pass of ``--val-docs N``: per domain, the number of non-empty documents in ``unit``
    and their N smallest hashes (the domain's N smallest overall are among the units')."""
    assert s.val is not None and s.val.docs is not None
    bad = BadRecords(skip=True)  # bad records are reported by the conversion pass
    found: dict[str, list[np.ndarray]] = {}
    count: dict[str, int] = {}
    for by_domain, records, step in iter_unit(unit, s, bad):
        for d, t in by_domain.items():
            texts = t.column(_text_column(s))
            h = document_hashes(texts, s.val.seed)
            h = h[pc.greater(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False)]
            count[d] = count.get(d, 0) + len(h)
            found.setdefault(d, []).append(np.asarray(smallest(h, s.val.docs), np.uint64))
        if report is not None:
            report(records, 0, step)
    return {d: (count[d], smallest(np.concatenate(hs), s.val.docs))
            for d, hs in sorted(found.items())}


def eos_after_documents(s: ConvertSettings) -> bool:
    """Whether EOS follows each document: plain text always when packed (it is the only
    separator there); prompt/response unless --no-eos; never after a chat conversation (the
    template ends each turn itself, often with EOS)."""
    if s.messages_field:
        return False
    if s.instruct:
        return s.append_eos
    return s.append_eos or bool(s.seq_len)


def check_token_column(s: ConvertSettings) -> None:
    """Output columns must not collide: unpacked output keeps the input fields, so the token
    (and loss mask) column must be new names; packed rows hold only the written columns."""
    if not s.tokenizer:
        return
    written = [s.token_column] + ([LOSS_MASK] if s.instruct else [])
    if s.seq_len:
        if s.instruct or s.document_ids:
            written.append(DOCUMENT_IDS)
        if len(set(written)) < len(written):
            raise ShardError(f"--token-column {s.token_column!r} is also the name of the "
                             f"{s.token_column} column written beside it; choose another name")
        return
    for g, schema in enumerate(s.schemas):
        kept = [n for n in schema.names if n not in s.content or s.keep_text]
        for name in written:
            if name in kept:
                flag = "choose another name with --token-column or " if name == s.token_column \
                    else ""
                raise ShardError(f"{s.origins[g]}: the inputs already have a field {name!r}; "
                                 f"{flag}--drop it")
