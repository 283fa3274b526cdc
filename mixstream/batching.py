"""Assemble a batch from per-domain reservoir pieces with numpy (no per-token Python work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .batch import Batch, Sample
from .sources.base import Block, ColumnSpec, Ragged, Schema, take_column

Pieces = list[tuple[np.ndarray, list[tuple[Block, np.ndarray]]]]
"""For each domain in the batch: (batch positions, [(window data, window rows) ...])."""

# Token ids stored as uint16/uint32 (compact on disk) are widened for the model: nn.Embedding
# and most torch ops refuse unsigned 16/32-bit tensors, so every user added ``.long()``.
_WIDEN = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))


def widened_dtype(dtype: np.dtype, token_dtype: str | None) -> np.dtype:
    """The dtype a stored column arrives in (unsigned token ids widened to ``token_dtype``)."""
    if token_dtype is None or dtype not in _WIDEN:
        return dtype
    return np.dtype(token_dtype)


def _widen(arr: np.ndarray, token_dtype: str | None) -> np.ndarray:
    dtype = widened_dtype(arr.dtype, token_dtype)
    return arr if dtype == arr.dtype else arr.astype(dtype)


def _fill_array(spec: ColumnSpec, name: str, size: int, pieces: Pieces) -> np.ndarray:
    first = pieces[0][1][0][0][name]
    assert isinstance(first, np.ndarray)
    out = np.empty((size,) + first.shape[1:], dtype=first.dtype)
    for positions, parts in pieces:
        if len(parts) == 1:
            data, rows = parts[0]
            out[positions] = data[name][rows]  # type: ignore[index]
        else:
            out[positions] = np.concatenate([data[name][rows] for data, rows in parts])  # type: ignore[index]
    return out


def _fill_list(name: str, size: int, pieces: Pieces, token_dtype: str | None = None) -> list:
    """A list column; rows of domains without this column stay None."""
    out: list = [None] * size
    for positions, parts in pieces:
        values: list = []
        for data, rows in parts:
            col = data.get(name)
            if col is None:
                break
            if isinstance(col, Ragged):
                sub = take_column(col, rows)
                assert isinstance(sub, Ragged)
                values.extend(torch.from_numpy(_widen(sub.row(i), token_dtype))
                              for i in range(len(sub)))
            elif isinstance(col, np.ndarray):
                values.extend(torch.from_numpy(_widen(np.asarray(col[rows]), token_dtype)).unbind(0))
            else:
                values.extend(col[int(r)] for r in rows)
        for p, v in zip(positions.tolist(), values):
            out[p] = v
    return out


def assemble(schema: Schema, size: int, pieces: Pieces, domain: np.ndarray,
             index: np.ndarray, uniform: bool = False, token_dtype: str | None = None) -> Batch:
    """One batch dict: fixed/scalar columns as tensors, ragged as lists of tensors, others lists.

    ``schema`` may be the union of several domains' columns (per-sample mode); a column some
    domains lack becomes a list with None in their rows. ``uniform``: every domain is known to
    have every column (batched mode checks this once). ``token_dtype``: unsigned integer columns
    (token ids) are cast to it (``"int64"``), None keeps the stored dtype.
    """
    batch: dict[str, Any] = {}
    for name, spec in schema.items():
        everywhere = uniform or all(name in data for _, parts in pieces for data, _ in parts)
        if spec.kind in ("fixed", "scalar") and everywhere:
            batch[name] = torch.from_numpy(_widen(_fill_array(spec, name, size, pieces),
                                                  token_dtype))
        else:
            batch[name] = _fill_list(name, size, pieces, token_dtype)
    batch["domain"] = torch.from_numpy(domain)
    batch["index"] = torch.from_numpy(index)
    return batch  # type: ignore[return-value]  # (the columns are the corpus's)


def split_samples(batch: Batch, size: int) -> Iterator[Sample]:
    """The samples of an assembled batch, one dict each (for per-sample DataLoader mode)."""
    domain = batch["domain"].tolist()
    index = batch["index"].tolist()
    # one unbind per tensor column (B views in one call) instead of B indexing operations
    cols: list[tuple[str, Any]] = [(k, v.unbind(0) if isinstance(v, torch.Tensor) else v)
                                   for k, v in batch.items() if k not in ("domain", "index")]
    for i in range(size):
        sample = {k: v[i] for k, v in cols if v[i] is not None}
        sample["domain"] = domain[i]
        sample["index"] = index[i]
        yield sample  # type: ignore[misc]  # (the columns are the corpus's)
