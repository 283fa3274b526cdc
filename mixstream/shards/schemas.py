"""The schema of an input group, taken from its first file before any work is split.

Every unit of the group then reads with these field types (JSON Lines get them as pyarrow's
explicit schema), so all shards of a domain agree whatever process wrote them.
"""

from __future__ import annotations

import pyarrow as pa

from .errors import InputError
from .inputs import InputFile, InputPiece
from .readers import ReadOptions, read_piece
from .validate import BadRecords

SAMPLE_BYTES = 4 << 20


def _sample(f: InputFile, opts: ReadOptions, tolerant: BadRecords) -> pa.Schema | None:
    opts = ReadOptions(min(opts.read_bytes, SAMPLE_BYTES), opts.sample_by, opts.text_field)
    piece = InputPiece(f, 0, None if f.kind != "jsonl" or f.compression else min(f.size, SAMPLE_BYTES))
    if f.kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(f.path)
    for chunk in read_piece(piece, None, opts, tolerant):
        if chunk.table.num_rows:
            return chunk.table.schema
    return None


def _normalise(field: pa.Field) -> pa.Field:
    t = field.type
    if pa.types.is_null(t) or pa.types.is_large_string(t):
        return field.with_type(pa.string())
    return field


def group_schema(files: list[InputFile], opts: ReadOptions,
                 content: tuple[tuple[str, str], ...], domain_field: str | None,
                 drop: tuple[str, ...]) -> tuple[pa.Schema, str]:
    """``(schema, origin)``: the fields of the group's first non-empty file, minus ``drop``.

    Fields that are all null in the sample are read as strings; the ``content`` fields
    (``(name, the flag that chooses it)``) and the domain field must be present.
    """
    tolerant = BadRecords(skip=True)  # bad lines are reported by the real pass, not here
    for f in files:
        schema = _sample(f, opts, tolerant)
        if schema is None:
            continue
        fields = [_normalise(x) for x in schema
                  if x.name not in drop or x.name == domain_field]
        names = [x.name for x in fields]
        for need, flag in (*content, (domain_field, "--domain-field")):
            if need is not None and need not in names:
                raise InputError(f.path, f"no field {need!r} in the first records (fields: "
                                 f"{', '.join(schema.names)})", f"choose the field with {flag}")
        return pa.schema(fields), f.path
    where = files[0].path if len(files) == 1 else f"{files[0].path} (+{len(files) - 1})"
    if tolerant.count:
        raise InputError(where, f"no readable records in any input file ({tolerant.count} bad, "
                         f"the first: {tolerant.examples[0]})", "fix the inputs")
    raise InputError(where, "no records in any input file (empty input)", "check the inputs")
