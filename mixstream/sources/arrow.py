"""Convert Arrow data (tables, record batches) into mixstream blocks without per-token work."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from .base import Block, Column, ColumnSpec, Ragged, Schema


def _is_list(t: pa.DataType) -> bool:
    return bool(pat.is_list(t) or pat.is_large_list(t))


def column_spec(field: pa.Field) -> ColumnSpec:
    """The :class:`ColumnSpec` an Arrow field decodes to."""
    t = field.type
    if pat.is_fixed_size_list(t) and _is_numeric(t.value_type):
        return ColumnSpec("fixed", t.value_type.to_pandas_dtype().__name__, int(t.list_size))
    if _is_list(t) and _is_numeric(t.value_type):
        return ColumnSpec("ragged", t.value_type.to_pandas_dtype().__name__)
    if _is_numeric(t):
        return ColumnSpec("scalar", t.to_pandas_dtype().__name__)
    if pat.is_string(t) or pat.is_large_string(t):
        return ColumnSpec("object", "str")
    if pat.is_binary(t) or pat.is_large_binary(t):
        return ColumnSpec("object", "bytes")
    return ColumnSpec("object", str(t))


def schema_from_arrow(schema: pa.Schema) -> Schema:
    return {f.name: column_spec(f) for f in schema}


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t))


def numeric_to_numpy(arr: pa.Array) -> np.ndarray:
    """A numeric Arrow array without nulls as numpy, zero-copy (read-only) like ``to_numpy``.

    Why not ``Array.to_numpy``: its first call in a process imports pandas (~0.15 s here) when
    pandas is installed, and that landed on the first batch's critical path. Integers and floats
    are read from the data buffer directly; booleans (bit-packed) still go through pyarrow."""
    t = arr.type
    if pat.is_integer(t):
        dtype = np.dtype(f"{'i' if pat.is_signed_integer(t) else 'u'}{t.bit_width // 8}")
    elif pat.is_floating(t):
        dtype = np.dtype(f"f{t.bit_width // 8}")
    else:
        return arr.to_numpy(zero_copy_only=False)
    data = arr.buffers()[1]
    if data is None or len(arr) == 0:
        return np.empty(0, dtype)
    return np.frombuffer(data, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def column_from_arrow(arr: pa.Array | pa.ChunkedArray) -> Column:
    """One Arrow column as a numpy array, :class:`Ragged` or list (see :mod:`.base`)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    if pat.is_fixed_size_list(t) and _is_numeric(t.value_type):
        if arr.null_count:
            raise ValueError("null token rows are not supported")
        values = numeric_to_numpy(arr.flatten())
        return values.reshape(len(arr), t.list_size)
    if _is_list(t) and _is_numeric(t.value_type):
        if arr.null_count:
            raise ValueError("null token rows are not supported")
        offsets = numeric_to_numpy(arr.offsets).astype(np.int64, copy=False)
        values = numeric_to_numpy(arr.values)
        return Ragged(values, offsets)
    if _is_numeric(t) and not arr.null_count:
        return numeric_to_numpy(arr)
    return arr.to_pylist()


def block_from_arrow(table: pa.Table | pa.RecordBatch, columns: list[str] | None = None) -> Block:
    names = columns if columns is not None else table.schema.names
    return {name: column_from_arrow(table.column(name)) for name in names}
