"""Token packing as pure numpy functions: EOS after each document, fixed-length windows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .tables import fixed_array


def append_eos(values: np.ndarray, lengths: np.ndarray,
               eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents ``(values, lengths)`` with ``eos_id`` appended to each one."""
    new_lengths = lengths + 1
    ends = np.cumsum(new_lengths) - 1  # position of each EOS in the output
    out = np.empty(int(new_lengths.sum()), dtype=values.dtype)
    is_eos = np.zeros(len(out), dtype=bool)
    is_eos[ends] = True
    out[is_eos] = eos_id
    out[~is_eos] = values
    return out, new_lengths


def pack(carry: np.ndarray, values: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``carry`` + ``values`` cut into rows of ``seq_len``; returns ``(rows, new_carry)``.

    ``rows`` is ``[k, seq_len]``; ``new_carry`` (shorter than ``seq_len``) starts the next call.
    """
    stream = np.concatenate([carry, values]) if len(carry) else values
    k = len(stream) // seq_len
    rows = stream[: k * seq_len].reshape(k, seq_len)
    return rows, stream[k * seq_len :].copy()


def packed_table(rows: np.ndarray, column: str) -> pa.Table:
    return pa.table({column: fixed_array(rows)})


def packed_schema(column: str, dtype: np.dtype, seq_len: int) -> pa.Schema:
    return pa.schema([(column, pa.list_(pa.from_numpy_dtype(dtype), seq_len))])
