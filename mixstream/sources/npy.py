"""Folders of ``.npy`` token arrays, memory-mapped: the smallest complete format.

Each file is one array of integer token ids. A 2-D file ``[rows, seq_len]`` is one block of
``rows`` samples; a 1-D file is a token stream cut into samples of ``seq_len`` tokens, grouped
into blocks of ``block_rows`` samples. Counts come from each file's ``.npy`` header
(``np.load(mmap_mode="r")`` maps the file, reading no data), so opening reads no tokens; a
block is copied out of the mapping when it is read. The column is ``input_ids``.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from ..errors import SourceError
from .base import Block, ColumnSpec, Schema, Source
from .location import Format, Location

COLUMN = "input_ids"


class NpySource(Source):
    """A directory of ``*.npy`` files (sorted by name), one ``.npy`` file, or a glob of them.

    ``seq_len`` is required for 1-D files (2-D files carry it as their width; given, it must
    match). A 1-D file whose length is not a multiple of ``seq_len`` is an error, never a
    silently dropped tail."""

    def __init__(self, path: str | os.PathLike[str], *, seq_len: int | None = None,
                 block_rows: int = 1024):
        self.uri = os.fspath(path)
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        if os.path.isdir(self.uri):
            self.files = sorted(glob.glob(os.path.join(self.uri, "*.npy")))
        elif any(c in self.uri for c in "*?["):
            self.files = sorted(glob.glob(self.uri))
        else:
            self.files = [self.uri]
        if not self.files:
            raise SourceError(f"{self.uri}: no .npy files")
        width = seq_len
        dtype: np.dtype | None = None
        blocks: list[tuple[int, int, int]] = []  # (file, first row, rows)
        for i, f in enumerate(self.files):
            shape, dt = _header(f)
            if dt.kind not in "iu":
                raise SourceError(f"{f}: dtype {dt} is not an integer type; token arrays hold "
                                  f"integer ids")
            if dtype is not None and dt != dtype:
                raise SourceError(f"{f}: dtype {dt} differs from {self.files[0]}'s {dtype}; "
                                  f"all files of one source must share a dtype")
            dtype = dt
            if len(shape) == 2:
                if width is not None and shape[1] != width:
                    raise SourceError(f"{f}: rows of {shape[1]} tokens, expected {width} "
                                      f"(seq_len, or the width of {self.files[0]})")
                width, rows = int(shape[1]), int(shape[0])
                if rows:
                    blocks.append((i, 0, rows))
            elif len(shape) == 1:
                if width is None:
                    raise SourceError(f"{f}: a 1-D token stream needs a sample length; open "
                                      f"it with NpySource({self.uri!r}, seq_len=...)")
                rows, rest = divmod(int(shape[0]), width)
                if rest:
                    raise SourceError(f"{f}: {shape[0]} tokens is not a multiple of "
                                      f"seq_len={width}; trim the file or pick a seq_len that "
                                      f"divides it")
                blocks.extend((i, r, min(block_rows, rows - r)) for r in range(0, rows, block_rows))
            else:
                raise SourceError(f"{f}: a {len(shape)}-D array; expected [rows, seq_len] or a "
                                  f"1-D token stream")
        assert dtype is not None and width is not None
        self.seq_len = width
        self._blocks = np.asarray(blocks, dtype=np.int64).reshape(-1, 3)
        self._schema: Schema = {COLUMN: ColumnSpec("fixed", dtype.name, width)}
        self._maps: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # a memmap pickles as a copy of its data: reopen in the worker
        return state

    @property
    def block_sizes(self) -> np.ndarray:
        return self._blocks[:, 2]

    @property
    def schema(self) -> Schema:
        return self._schema

    def tokens_per_sample(self) -> float | None:
        return float(self.seq_len)

    def read_block(self, index: int) -> Block:
        f, first, rows = (int(x) for x in self._blocks[index])
        mm = self._maps.get(f)
        try:
            if mm is None:
                mm = self._maps[f] = np.load(self.files[f], mmap_mode="r")
            data = np.array(mm.reshape(-1, self.seq_len)[first : first + rows])
        except (OSError, ValueError) as e:
            raise SourceError(f"{self.files[f]}: cannot read rows {first}..{first + rows} "
                              f"({type(e).__name__}: {e}); the file is truncated or was "
                              f"replaced") from e
        if len(data) != rows:
            raise SourceError(f"{self.files[f]}: {len(data)} rows at {first}, expected {rows}; "
                              f"the file changed since it was opened")
        return {COLUMN: data}

    def fingerprint_parts(self) -> dict[str, Any]:
        """File names, sizes, dtype and width (a copied folder gives the same)."""
        try:
            files = [[os.path.basename(f), os.path.getsize(f)] for f in self.files]
        except OSError as e:
            raise SourceError(f"{self.uri}: a file is gone ({e}); restore it") from e
        return {"kind": "npy", "seq_len": self.seq_len, "dtype": self._schema[COLUMN].dtype,
                "files": files}


def _header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the ``.npy`` header; the mapping checks the file holds the data."""
    try:
        mm = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:  # a truncated file fails to map; a bad header to parse
        raise SourceError(f"{path}: not a readable .npy file ({e})") from e
    if not isinstance(mm, np.ndarray) or mm.dtype.hasobject:
        raise SourceError(f"{path}: not a plain numeric .npy array")
    return tuple(mm.shape), mm.dtype


def _detect(loc: Location) -> bool:
    if loc.suffix == ".npy":
        return True
    files = loc.files()
    return bool(files) and all(n.endswith(".npy") for n in files)


def _open(loc: Location) -> Source:
    if loc.is_url:
        raise SourceError(f"{loc.path}: .npy arrays are memory-mapped from local disk; copy "
                          f"them locally, or convert them with `mixstream-shard convert`")
    return NpySource(loc.path)


FORMAT = Format("npy", _detect, _open, "folders of .npy token arrays", suffixes=(".npy",))
