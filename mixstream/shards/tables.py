"""Turn the data a user hands to :func:`write_shards` into Arrow record batches of one schema.

Accepted: a ``pyarrow.Table`` / ``RecordBatch`` / ``RecordBatchReader`` (or anything with
``__arrow_c_stream__``, e.g. a pandas or polars frame), a dict of columns, or an iterable of
dict records and/or tables and batches. Token columns may be numpy arrays: a 2-D array
``[n, L]`` becomes ``FixedSizeList<L>``, a list of 1-D arrays (or 1-D arrays inside records)
becomes ``List``; the numpy dtype is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from .errors import ShardError

DataLike: TypeAlias = (
    pa.Table | pa.RecordBatch | pa.RecordBatchReader | Mapping[str, Any] | Iterable[Any]
)


def ragged_array(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """``List`` array (one row per length) from flat values, without per-row Python work."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


def list_array(rows: list[np.ndarray]) -> pa.Array:
    """``List`` array from 1-D numpy rows."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    values = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    return ragged_array(values, lengths)


def fixed_array(matrix: np.ndarray) -> pa.Array:
    """``FixedSizeList`` array from a 2-D numpy array ``[rows, width]``."""
    rows, width = matrix.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).ravel()), width)


def to_arrow_array(values: Any, type: pa.DataType | None = None, name: str = "?") -> pa.Array:
    """One column (numpy array, list, Arrow array) as an Arrow array of ``type`` if given."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, np.ndarray) and values.ndim == 2:
        arr: pa.Array = fixed_array(values)
    elif isinstance(values, np.ndarray) and values.ndim > 2:
        raise ShardError(f"column {name!r}: numpy array with {values.ndim} dimensions; "
                         f"give a 2-D [rows, length] array or a list of 1-D arrays")
    elif isinstance(values, np.ndarray) and values.dtype != object:
        arr = pa.array(values)
    elif isinstance(values, pa.Array):
        arr = values
    else:
        seq = list(values)
        if seq and all(isinstance(v, np.ndarray) and v.ndim == 1 for v in seq):
            arr = list_array(seq)
        else:
            try:
                arr = pa.array(seq, type=type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
                want = f" as {type}" if type is not None else ""
                raise ShardError(f"column {name!r}: cannot convert values{want} ({e}); "
                                 f"give every row the same type") from e
    if type is not None and arr.type != type:
        try:
            arr = arr.cast(type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise ShardError(f"column {name!r} is {arr.type}, earlier rows had {type} ({e}); "
                             f"give every row the same type") from e
    return arr


def table_from_columns(columns: Mapping[str, Any], schema: pa.Schema | None = None) -> pa.Table:
    """A dict of equal-length columns as a table (``schema`` fixes the types if given)."""
    arrays = {}
    for name, values in columns.items():
        want = schema.field(name).type if schema is not None and name in schema.names else None
        arrays[str(name)] = to_arrow_array(values, want, str(name))
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ShardError(f"columns have different lengths {lengths}; give every column one "
                         f"value per row")
    return pa.table(arrays)


def _records_batch(records: list[Mapping[str, Any]], first_index: int, keys: list[str],
                   schema: pa.Schema | None) -> pa.RecordBatch:
    for i, rec in enumerate(records):
        if list(rec.keys()) != keys and set(rec.keys()) != set(keys):
            raise ShardError(f"record {first_index + i}: fields {sorted(rec.keys())} differ from "
                             f"the first record's {sorted(keys)}; give every record the same "
                             f"fields (use None for missing values)")
    columns = {k: [rec[k] for rec in records] for k in keys}
    try:
        table = table_from_columns(columns, schema)
    except ShardError as e:
        raise ShardError(f"records {first_index}-{first_index + len(records) - 1}: {e}") from e
    return table.combine_chunks().to_batches()[0]


def iter_batches(data: DataLike, rows_per_batch: int,
                 schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of ``data`` (not yet checked against each other; see ``conform``)."""
    if isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.Table):
        yield from data.to_batches()
    elif isinstance(data, pa.RecordBatchReader):
        yield from data
    elif isinstance(data, Mapping):
        yield from table_from_columns(data, schema).to_batches()
    elif hasattr(data, "__arrow_c_stream__"):
        yield from pa.RecordBatchReader.from_stream(data)
    elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ShardError(f"cannot write {type(data).__name__}: give a pyarrow Table or "
                         f"RecordBatch, a dict of columns, or an iterable of dict records")
    else:
        yield from _iter_mixed(data, rows_per_batch, schema)


def _iter_mixed(items: Iterable[Any], rows_per_batch: int,
                schema: pa.Schema | None) -> Iterator[pa.RecordBatch]:
    pending: list[Mapping[str, Any]] = []
    keys: list[str] | None = None
    seen = 0  # records consumed so far, for error messages
    for item in items:
        if isinstance(item, Mapping):
            if keys is None:
                keys = [str(k) for k in item.keys()]
            pending.append(item)
            if len(pending) >= rows_per_batch:
                batch = _records_batch(pending, seen, keys, schema)
                schema = schema or batch.schema
                seen += len(pending)
                pending = []
                yield batch
            continue
        if pending:
            assert keys is not None
            yield _records_batch(pending, seen, keys, schema)
            seen += len(pending)
            pending = []
        if isinstance(item, (pa.RecordBatch, pa.Table)):
            yield from iter_batches(item, rows_per_batch, schema)
        else:
            raise ShardError(f"item {seen}: {type(item).__name__} is neither a dict record nor "
                             f"a pyarrow Table/RecordBatch")
    if pending:
        assert keys is not None
        yield _records_batch(pending, seen, keys, schema)


def conform(batch: pa.RecordBatch, schema: pa.Schema, where: str) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``; only lossless fixes (column order, all-null columns)."""
    if batch.schema.equals(schema):
        return batch
    names, want = set(batch.schema.names), set(schema.names)
    if names != want:
        raise ShardError(f"{where}: columns {sorted(names)} differ from the first batch's "
                         f"{sorted(want)}; every batch must have the same columns")
    arrays = []
    for f in schema:
        col = batch.column(f.name)
        if col.type != f.type:
            if pa.types.is_null(col.type):
                col = pa.nulls(len(col), f.type)
            else:
                raise ShardError(f"{where}: column {f.name!r} is {col.type}, the first batch "
                                 f"had {f.type}; every batch must have the same schema")
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
