"""The Source interface: read-only, block-addressed access to one domain's samples.

A *block* is the unit of I/O (a Parquet row group, an Arrow record batch, an MDS shard, a
slice of a Hugging Face dataset). A source knows how many samples each block holds without
reading the data (from a manifest or file footers), so planning needs no I/O.

A block is returned as a dict of columns. A column is one of:

* ``numpy.ndarray`` with one row per sample: 1-D for scalars, 2-D for fixed-length token
  sequences (``[rows, seq_len]``);
* :class:`Ragged` for variable-length sequences (values + offsets, no per-row objects);
* ``list`` of Python objects (``str``, ``bytes``, dicts ...) for everything else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..errors import SourceError

__all__ = ["Block", "Column", "ColumnSpec", "Ragged", "Schema", "Source", "SourceError",
           "concat_blocks", "slice_block", "take_column"]


@dataclass(frozen=True)
class Ragged:
    """Variable-length rows: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray  # int64, length rows + 1, offsets[0] may be non-zero

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]


Column = Union[np.ndarray, Ragged, list]  # noqa: UP007 (a runtime alias on Python 3.10)
Block = dict[str, Column]


@dataclass(frozen=True)
class ColumnSpec:
    """What a column holds, used to check that every block of a domain agrees.

    ``kind`` is ``"fixed"`` (2-D array, ``width`` per row), ``"ragged"``, ``"scalar"`` (1-D
    array) or ``"object"`` (list of Python objects); ``dtype`` is a numpy dtype name, or a
    short type name for object columns (``"str"``, ``"bytes"``, ``"json"``).
    """

    kind: str
    dtype: str
    width: int | None = None

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.dtype}[{self.width}]"
        if self.kind == "ragged":
            return f"{self.dtype}[*]"
        return self.dtype


Schema = dict[str, ColumnSpec]


class Source(ABC):
    """One readable collection of blocks. Subclasses must be picklable (DataLoader workers).

    Required: :attr:`uri`, :attr:`block_sizes`, :attr:`schema`, :meth:`read_block`. Optional
    capabilities have working defaults here, so callers call them on any source without
    checking: :meth:`prefetch` (a no-op), :meth:`tokens_per_sample` (unknown),
    :meth:`stats` (samples, and tokens where :meth:`tokens_per_sample` knows them) and
    :meth:`fingerprint_parts` (class and schema)."""

    #: where the data lives, used in every error message
    uri: str

    @property
    @abstractmethod
    def block_sizes(self) -> np.ndarray:
        """Samples in each block (int64), known without reading sample data."""

    @property
    @abstractmethod
    def schema(self) -> Schema:
        """Columns of every block (checked equal across blocks)."""

    @abstractmethod
    def read_block(self, index: int) -> Block:
        """Decode block ``index``; raise :class:`SourceError` naming the file on failure."""

    @property
    def num_samples(self) -> int:
        return int(self.block_sizes.sum())

    def tokens_per_sample(self) -> float | None:
        """Average token count per sample when known (manifests), else None."""
        return None

    def prefetch(self, blocks: Sequence[int]) -> None:  # noqa: B027 - optional, no-op default
        """Hint: these blocks are read soon. Remote sources start fetching them in the
        background (bounded concurrency); a local source may check files ahead; the default
        does nothing."""

    def stats(self) -> dict[str, int | None]:
        """Samples, tokens, bytes and documents, each None where unknown (a manifest knows
        them all; the default knows samples, and tokens from :meth:`tokens_per_sample`)."""
        per = self.tokens_per_sample()
        return {"samples": self.num_samples,
                "tokens": None if per is None else round(per * self.num_samples),
                "bytes": None, "documents": None}

    def fingerprint_parts(self) -> dict[str, Any]:
        """JSON-able identity of the data, for :meth:`Domain.fingerprint`: what a copy of the
        same files elsewhere shares and a changed file does not (names relative to the dataset,
        sizes, recorded hashes or footers; never absolute paths or mtimes). This default knows
        only the class, block sizes and schema; sources override it with their file metadata."""
        return {"kind": type(self).__qualname__,
                "schema": {k: [v.kind, v.dtype, v.width] for k, v in self.schema.items()}}



def take_column(col: Column, idx: np.ndarray) -> Column:
    """Rows ``idx`` of a column, vectorised for arrays and ragged columns."""
    if isinstance(col, np.ndarray):
        return col[idx]
    if isinstance(col, Ragged):
        starts = col.offsets[idx]
        lens = col.offsets[idx + 1] - starts
        new_off = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=new_off[1:])
        # position of every output value in the input: start of its row + rank within row
        pos = np.repeat(starts - new_off[:-1], lens) + np.arange(new_off[-1], dtype=np.int64)
        return Ragged(col.values[pos], new_off)
    return [col[int(i)] for i in idx]



def concat_blocks(blocks: list[Block]) -> Block:
    """Concatenate blocks with equal columns (row order preserved)."""
    if len(blocks) == 1:
        return blocks[0]
    out: Block = {}
    for name in blocks[0]:
        cols = [b[name] for b in blocks]
        first = cols[0]
        if isinstance(first, np.ndarray):
            out[name] = np.concatenate(cols)  # type: ignore[arg-type]
        elif isinstance(first, Ragged):
            values = np.concatenate([c.values[c.offsets[0] : c.offsets[-1]] for c in cols])  # type: ignore[union-attr]
            lens = np.concatenate([np.diff(c.offsets) for c in cols])  # type: ignore[union-attr]
            off = np.zeros(len(lens) + 1, dtype=np.int64)
            np.cumsum(lens, out=off[1:])
            out[name] = Ragged(values, off)
        else:
            merged: list = []
            for c in cols:
                merged.extend(c)  # type: ignore[arg-type]
            out[name] = merged
    return out


def slice_block(block: Block, start: int, stop: int) -> Block:
    out: Block = {}
    for name, col in block.items():
        if isinstance(col, Ragged):
            out[name] = Ragged(col.values, col.offsets[start : stop + 1])
        else:
            out[name] = col[start:stop]
    return out
