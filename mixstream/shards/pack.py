"""Token packing as pure numpy functions: EOS after each document, fixed-length windows, and
the per-token columns that travel with the tokens (loss mask, document starts)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .tables import fixed_array


def append_eos(values: np.ndarray, lengths: np.ndarray,
               eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents ``(values, lengths)`` with ``eos_id`` appended to each one."""
    return append_each(values, lengths, eos_id), lengths + 1


def append_each(values: np.ndarray, lengths: np.ndarray, fill: int) -> np.ndarray:
    """``values`` with ``fill`` appended after each document (lengths grow by one)."""
    new_lengths = lengths + 1
    ends = np.cumsum(new_lengths) - 1  # position of each appended value in the output
    out = np.empty(int(new_lengths.sum()), dtype=values.dtype)
    is_end = np.zeros(len(out), dtype=bool)
    is_end[ends] = True
    out[is_end] = fill
    out[~is_end] = values
    return out


def document_starts(lengths: np.ndarray) -> np.ndarray:
    """1 on the first token of each document, else 0 (``uint8``, one per token)."""
    starts = np.zeros(int(lengths.sum()), dtype=np.uint8)
    first = np.cumsum(lengths) - lengths
    starts[first[lengths > 0]] = 1
    return starts


def document_ids(start_rows: np.ndarray) -> np.ndarray:
    """Per-row document numbers ``0, 1, 2 …`` from packed start flags ``[k, L]``.

    A row that begins inside a document numbers that piece 0; the numbers only need to differ
    between neighbouring documents of one row (attention and losses are per row).
    """
    ids = np.cumsum(start_rows, axis=1, dtype=np.int64) - start_rows[:, :1]
    return ids.astype(np.uint16 if start_rows.shape[1] <= 1 << 16 else np.uint32)


def pack(carry: np.ndarray, values: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``carry`` + ``values`` cut into rows of ``seq_len``; returns ``(rows, new_carry)``.

    ``rows`` is ``[k, seq_len]``; ``new_carry`` (shorter than ``seq_len``) starts the next call.
    """
    stream = np.concatenate([carry, values]) if len(carry) else values
    k = len(stream) // seq_len
    rows = stream[: k * seq_len].reshape(k, seq_len)
    return rows, stream[k * seq_len :].copy()


def packed_table(rows: np.ndarray, column: str, mask_rows: np.ndarray | None = None,
                 start_rows: np.ndarray | None = None) -> pa.Table:
    """Packed rows as a table: the tokens, then ``loss_mask`` and ``document_ids`` if given."""
    cols = {column: fixed_array(rows)}
    if mask_rows is not None:
        cols["loss_mask"] = fixed_array(mask_rows)
    if start_rows is not None:
        cols["document_ids"] = fixed_array(document_ids(start_rows))
    return pa.table(cols)
