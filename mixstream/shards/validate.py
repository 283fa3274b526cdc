"""Record-level checks on parsed input tables: text field, domain field, unexpected fields.

A bad record raises :class:`RecordError` naming ``file:line``; with ``--skip-bad`` it is
dropped and counted in :class:`BadRecords` instead (never silently).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import SKIP_HINT, InputError, RecordError

Locate = Callable[[int], str]  # row index in a table -> "path:line N" (or "path: row N")
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_EXAMPLES = 20


@dataclass
class BadRecords:
    """Raises bad records, or counts them (keeping a few examples) when ``skip`` is set."""

    skip: bool = False
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, err: RecordError) -> None:
        if not self.skip:
            raise err
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(err).split("; ")[0])

    def merge(self, other: BadRecords) -> None:
        self.count += other.count
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[:max(room, 0)])


def _rows(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


def drop_rows(table: pa.Table, rows: Iterable[int]) -> pa.Table:
    rows = np.asarray(sorted(set(rows)), dtype=np.int64)
    if len(rows) == 0:
        return table
    keep = np.ones(table.num_rows, dtype=bool)
    keep[rows] = False
    return table.filter(pa.array(keep))


def _report(errors: list[tuple[int, RecordError]], bad: BadRecords) -> set[int]:
    """Hand bad records to ``bad`` in row order; returns their rows."""
    for _, err in sorted(errors, key=lambda x: x[0]):
        bad.add(err)
    return {r for r, _ in errors}


def check_fields(table: pa.Table, allowed: list[str], origin: str, locate: Locate,
                 bad: BadRecords) -> pa.Table:
    """Remove fields outside ``allowed`` (records that use one are bad records)."""
    extra = [n for n in table.column_names if n not in allowed]
    errors: list[tuple[int, RecordError]] = []
    for name in extra:
        col = table.column(name)
        hits = _rows(pc.is_valid(col)) if not pa.types.is_null(col.type) else np.empty(0, int)
        errors.extend((int(r), RecordError(
            locate(int(r)), f"field {name!r} is not among the fields of {origin} "
            f"({', '.join(allowed)})", f"drop it with --drop {name}, {SKIP_HINT}"))
            for r in hits)
    return drop_rows(table.drop_columns(extra), _report(errors, bad))


def _has_strings(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return True
    return any(_has_strings(t.field(i).type) for i in range(t.num_fields))


def _utf8_problem(col: pa.ChunkedArray, r: int) -> str | None:
    """Why row ``r`` of ``col`` is not valid UTF-8, or None if it is."""
    one = col.slice(r, 1)
    try:
        one.validate(full=True)
        return None
    except pa.ArrowInvalid as e:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            raw = one.cast(pa.large_binary())[0].as_py()
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as u:
                return f"byte {u.start} ({raw[u.start:u.start + 1]!r}): {u.reason}"
        return str(e)


def check_utf8(table: pa.Table, locate: Locate, bad: BadRecords) -> pa.Table:
    """Rows whose string fields (nested ones too) are valid UTF-8; others are bad records.

    pyarrow's JSON and CSV readers (with ``check_utf8=False``) and Parquet files can hand over
    string columns holding invalid UTF-8; written as they are, they would make every reader
    of the shards fail later. Arrow's full validation checks a whole column at once (SIMD);
    rows are checked one by one only when it fails.
    """
    errors: list[tuple[int, RecordError]] = []
    for name in table.column_names:
        col = table.column(name)
        if not _has_strings(col.type):
            continue
        try:
            col.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        for r in range(table.num_rows):
            problem = _utf8_problem(col, r)
            if problem is not None:
                errors.append((r, RecordError(locate(r), f"field {name!r} is not valid UTF-8 "
                                              f"({problem})", f"fix the file's encoding, "
                                              f"{SKIP_HINT}")))
    if not errors:
        return table
    return drop_rows(table, _report(errors, bad))


def check_text(table: pa.Table, text_field: str, where: str, locate: Locate,
               bad: BadRecords) -> pa.Table:
    """Rows whose ``text_field`` is a string; missing/null text is a bad record."""
    if text_field not in table.column_names:
        raise InputError(where, f"no field {text_field!r} (fields: "
                         f"{', '.join(table.column_names)})", "choose it with --text-field")
    col = table.column(text_field)
    if pa.types.is_large_string(col.type) or pa.types.is_null(col.type):
        col = col.cast(pa.string())
        table = table.set_column(table.column_names.index(text_field), text_field, col)
    elif not pa.types.is_string(col.type):
        raise InputError(where, f"field {text_field!r} holds {col.type}, not text",
                         "choose the text field with --text-field")
    missing = _rows(pc.is_null(col))
    for r in missing:
        bad.add(RecordError(locate(int(r)), f"record has no {text_field!r} field",
                            f"choose the text field with --text-field, {SKIP_HINT}"))
    return drop_rows(table, missing.tolist())


def split_domains(table: pa.Table, domain_field: str, where: str, locate: Locate,
                  bad: BadRecords) -> dict[str, pa.Table]:
    """Rows grouped by the value of ``domain_field`` (a valid directory name), order kept."""
    if domain_field not in table.column_names:
        raise InputError(where, f"no field {domain_field!r} for --domain-field (fields: "
                         f"{', '.join(table.column_names)})", "choose an existing field")
    col = table.column(domain_field)
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    errors = [(int(r), RecordError(locate(int(r)), f"record has no {domain_field!r} field "
                                   f"(--domain-field)", SKIP_HINT))
              for r in _rows(pc.is_null(col))]
    values = [v for v in pc.unique(col).to_pylist() if v is not None]
    for v in values:
        if not DOMAIN_NAME.match(v):
            errors.extend((int(r), RecordError(
                locate(int(r)), f"domain {v!r} is not a valid directory name (letters, digits, "
                f"'.', '_', '-')", f"clean the {domain_field!r} field, {SKIP_HINT}"))
                for r in _rows(pc.equal(col, v)))
    keep = drop_rows(table, _report(errors, bad))
    kcol = keep.column(domain_field).cast(pa.string())
    return {v: keep.filter(pc.equal(kcol, v)) for v in sorted(values) if DOMAIN_NAME.match(v)}
