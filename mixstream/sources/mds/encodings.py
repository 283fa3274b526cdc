"""MDS column encodings and the vectorised decoding of one shard's sample records.

The byte layouts follow mosaicml-streaming's ``streaming/base/format/mds`` (``writer.py``,
``encodings.py``), checked byte for byte against shards its ``MDSWriter`` wrote
(``tests/fixtures/mds``). They are decoded here with numpy instead of importing the library,
whose pins (numpy<2.2, transformers<5, torchvision) the core must not pull in.

A raw shard is ``uint32 N | uint32 offsets[N+1] | config JSON | records``; record ``i`` is
``bytes[offsets[i]:offsets[i+1]]`` = one ``uint32`` size per variable-size column, then each
column's payload in column order. All integers are little-endian.

Functions here raise ``ValueError`` with what is wrong; the caller adds the file name.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from ..base import Block, Column, ColumnSpec, Ragged

#: dtype codes of the ``ndarray`` encoding's dynamic-dtype byte (``NDArray._int2value_dtype``)
NDARRAY_DTYPES: dict[int, str] = {
    8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 18: "float16", 32: "uint32",
    33: "int32", 34: "float32", 64: "uint64", 65: "int64", 66: "float64",
}  # fmt: skip
#: numeric scalar encodings (``int`` is int64), fixed size, decoded to 1-D arrays
SCALARS: dict[str, str] = {name: name for name in NDARRAY_DTYPES.values()} | {"int": "int64"}
#: variable-size encodings decoded to a list of Python objects (name -> ColumnSpec dtype)
OBJECTS: dict[str, str] = {
    "str": "str", "bytes": "bytes", "json": "json", "str_int": "int",
    "str_float": "float", "str_decimal": "Decimal", "pkl": "pkl",
}  # fmt: skip
IMAGES = {"pil", "jpeg", "png", "list[pil]", "list[jpeg]", "list[png]", "jpeg_array", "jpegarray"}
UNSAFE = {"pkl"}
#: what this reader decodes, for error messages
SUPPORTED = sorted(SCALARS) + sorted(OBJECTS) + ["ndarray[:dtype[:shape]]"]


@dataclass(frozen=True)
class Encoding:
    """One parsed MDS column encoding.

    ``kind`` is the :class:`ColumnSpec` kind it decodes to; ``size`` the fixed payload size in
    bytes (``None`` = variable, the record then carries a uint32 length for it); ``dtype`` a
    numpy dtype name for numeric kinds; ``shape`` the static per-sample shape of a fixed
    ``ndarray``.
    """

    name: str
    kind: str
    dtype: str
    size: int | None = None
    shape: tuple[int, ...] | None = None

    def spec(self) -> ColumnSpec:
        width = int(np.prod(self.shape)) if self.shape is not None else None
        return ColumnSpec(self.kind, self.dtype, width)


def parse_encoding(text: str) -> Encoding:
    """Parse an encoding string from index.json (``"int"``, ``"ndarray:uint16:2048"`` ...).

    Image encodings parse (as variable-size ``"image"`` objects, so that the other columns of
    their records can be read) but cannot be decoded: see :func:`unreadable`.
    """
    if text in SCALARS:
        dtype = SCALARS[text]
        return Encoding(text, "scalar", dtype, np.dtype(dtype).itemsize)
    if text in OBJECTS:
        return Encoding(text, "object", OBJECTS[text])
    if text in IMAGES:
        return Encoding(text, "object", "image")
    if text == "ndarray" or text.startswith("ndarray:"):
        return _parse_ndarray(text)
    raise ValueError(f"unknown MDS encoding {text!r}; supported: {', '.join(SUPPORTED)}")


def unreadable(e: Encoding, *, allow_unsafe_types: bool = False) -> str | None:
    """Why a column of this encoding must not be decoded (with the fix), or None."""
    if e.dtype == "image":
        return (
            f"image encoding {e.name!r} is not supported by mixstream's MDS reader (language-"
            "model data only); leave the column out with columns=[...]"
        )
    if e.name in UNSAFE and not allow_unsafe_types:
        return (
            f"encoding {e.name!r} is pickle, which can run arbitrary code when read; pass "
            "allow_unsafe_types=True only if you trust whoever wrote the data, or leave the "
            "column out with columns=[...]"
        )
    return None


def _parse_ndarray(text: str) -> Encoding:
    args = text.split(":")[1:]
    if args in ([], [""]):
        return Encoding(text, "object", "ndarray")  # dtype and shape stored per sample
    dtype = args[0]
    if dtype not in NDARRAY_DTYPES.values() or len(args) > 2:
        raise ValueError(
            f"bad ndarray encoding {text!r}: expected 'ndarray:<dtype>[:<d0>,<d1>...]' with "
            f"dtype one of {sorted(NDARRAY_DTYPES.values())}"
        )
    if len(args) == 1:
        return Encoding(text, "ragged", dtype)
    try:
        shape = tuple(int(d) for d in args[1].split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"bad ndarray encoding {text!r}: shape must be positive integers")
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return Encoding(text, "fixed", dtype, size, shape)


# ------------------------------------------------------------------ record layout


def record_layout(
    buf: np.ndarray, offsets: np.ndarray, encodings: list[Encoding]
) -> tuple[np.ndarray, np.ndarray]:
    """Start and size of every column payload: two int64 arrays ``[samples, columns]``.

    ``buf`` is the whole shard as uint8; ``offsets`` the N+1 record offsets (int64).
    """
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    n, ncol = len(starts), len(encodings)
    variable = [j for j, e in enumerate(encodings) if e.size is None]
    sizes = np.empty((n, ncol), np.int64)
    for j, e in enumerate(encodings):
        if e.size is not None:
            sizes[:, j] = e.size
    head = 4 * len(variable)
    if variable and n:
        if int(lengths.min()) < head:
            bad = int(np.argmin(lengths))
            raise ValueError(f"sample {bad} is {lengths[bad]} bytes, shorter than its size header")
        idx = starts[:, None] + np.arange(head, dtype=np.int64)[None, :]
        sizes[:, variable] = buf[idx].view("<u4").reshape(n, len(variable))
    expected = head + sizes.sum(axis=1)
    wrong = np.flatnonzero(expected != lengths)
    if len(wrong):
        i = int(wrong[0])
        raise ValueError(
            f"sample {i} is {lengths[i]} bytes but its column sizes add up to {expected[i]} "
            f"({len(wrong)} samples disagree)"
        )
    col_starts = np.empty_like(sizes)
    col_starts[:, 0] = starts + head
    np.cumsum(sizes[:, :-1], axis=1, out=col_starts[:, 1:])
    col_starts[:, 1:] += col_starts[:, :1]
    return col_starts, sizes


#: mean row size (bytes) from which one slice copy per row beats an index gather (16k rows,
#: mean 8 B: 5.6 vs 1.7 ms; 64 B: 5.6 vs 4.9 ms; 256 B: 6 vs 112 ms; 4 KiB: 34 vs 550 ms)
SMALL_ROW = 64


def gather_bytes(
    buf: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    *,
    small_row: int = SMALL_ROW,
    chunk: int = 1 << 20,
) -> np.ndarray:
    """Concatenate ``buf[starts[i]:starts[i]+lengths[i]]`` for all ``i``.

    Rows averaging ``small_row`` bytes or more are copied one slice (a memcpy) each; smaller
    rows are gathered with one fancy index per ``chunk`` bytes, since building an index costs 8
    bytes per byte and only pays off when the per-row overhead dominates.
    """
    ends = np.cumsum(lengths)
    begins = ends - lengths
    n = len(starts)
    out = np.empty(int(ends[-1]) if n else 0, np.uint8)
    if len(out) >= small_row * n:
        for s, lo, hi in zip(starts.tolist(), begins.tolist(), ends.tolist(), strict=True):
            out[lo:hi] = buf[s : s + hi - lo]
        return out
    i = 0
    while i < n:
        j = max(i + 1, int(np.searchsorted(ends, begins[i] + chunk, side="right")))
        lo, hi = int(begins[i]), int(ends[j - 1])
        if j - i == 1:
            s = int(starts[i])
            out[lo:hi] = buf[s : s + hi - lo]
        else:
            shift = np.repeat(starts[i:j] - (begins[i:j] - lo), lengths[i:j])
            out[lo:hi] = buf[shift + np.arange(hi - lo, dtype=np.int64)]
        i = j
    return out


def _native(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Reinterpret little-endian bytes as ``dtype`` in native byte order."""
    return arr.view(np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)


# ------------------------------------------------------------------ column decoders


def decode_fixed_records(
    buf: np.ndarray, offsets: np.ndarray, encodings: list[Encoding], keep: list[bool]
) -> list[np.ndarray | None]:
    """Fast path when every column has a fixed size: records form a ``[N, record]`` matrix,
    and each kept column is a strided slice of it (one copy per column, no per-row work)."""
    n = len(offsets) - 1
    record = sum(e.size or 0 for e in encodings)
    lengths = np.diff(offsets)
    wrong = np.flatnonzero(lengths != record)
    if len(wrong):
        i = int(wrong[0])
        raise ValueError(f"sample {i} is {lengths[i]} bytes, expected {record} (fixed columns)")
    first = int(offsets[0]) if n else 0
    rows = buf[first : first + n * record].reshape(n, record)
    out: list[np.ndarray | None] = []
    pos = 0
    for e, k in zip(encodings, keep, strict=True):
        assert e.size is not None
        if k:
            cell = np.array(rows[:, pos : pos + e.size])  # own, writable memory, not the shard's
            out.append(_numeric(cell, e, n))
        else:
            out.append(None)
        pos += e.size
    return out


def _numeric(cell: np.ndarray, e: Encoding, n: int) -> np.ndarray:
    """``[n, size]`` uint8 cells of a fixed-size column to its 1-D or ``[n, *shape]`` array."""
    values = _native(cell.reshape(-1), e.dtype)
    if e.kind == "scalar":
        return values
    assert e.shape is not None
    return values.reshape((n, *e.shape))


def decode_column(
    data: bytes, buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, e: Encoding
) -> Column:
    """Decode one column given each row's payload ``starts`` and ``sizes`` in the shard."""
    n = len(starts)
    if e.size is not None:
        cells = gather_bytes(buf, starts, sizes).reshape(n, e.size)
        return _numeric(cells, e, n)
    if e.kind == "ragged":
        return _decode_ragged(buf, starts, sizes, e.dtype)
    return _decode_objects(data, starts, sizes, e.dtype)


def _decode_ragged(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, dtype: str) -> Ragged:
    """``ndarray:<dtype>`` rows: ``[(ndim << 2) | shape_code][shape][values]`` with ndim 1."""
    n = len(starts)
    itemsize = np.dtype(dtype).itemsize
    if n and int(sizes.min()) < 2:
        raise ValueError(f"a row is {int(sizes.min())} bytes, too short for an ndarray header")
    head = buf[starts].astype(np.int64) if n else np.zeros(0, np.int64)
    ndim, code = head >> 2, head & 3
    if n and (ndim != 1).any():
        i = int(np.flatnonzero(ndim != 1)[0])
        raise ValueError(
            f"sample {i} holds a {ndim[i]}-D array; mixstream reads dynamic-shape ndarray "
            "columns as 1-D rows (Ragged): write 1-D arrays, or a fixed shape "
            "'ndarray:<dtype>:<d0>,<d1>'"
        )
    shape_bytes = np.left_shift(1, code)
    counts = np.empty(n, np.int64)
    for c in np.unique(code).tolist():  # at most 4 shape dtypes: uint8/16/32/64
        rows = np.flatnonzero(code == c)
        nb = 1 << c
        idx = (starts[rows] + 1)[:, None] + np.arange(nb, dtype=np.int64)[None, :]
        counts[rows] = buf[idx].view(f"<u{nb}").reshape(-1).astype(np.int64)
    vstarts = starts + 1 + shape_bytes
    vlens = sizes - 1 - shape_bytes
    wrong = np.flatnonzero(counts * itemsize != vlens)
    if len(wrong):
        i = int(wrong[0])
        raise ValueError(
            f"sample {i}: ndarray header says {counts[i]} {dtype} values but "
            f"{vlens[i]} bytes follow"
        )
    values = _native(gather_bytes(buf, vstarts, vlens), dtype)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Ragged(values, offsets)


def _decode_any_ndarray(raw: bytes) -> np.ndarray:
    """Bare ``ndarray`` payload: ``[dtype code][(ndim << 2) | shape_code][shape][values]``."""
    if len(raw) < 2 or raw[0] not in NDARRAY_DTYPES:
        raise ValueError(f"bad ndarray header {raw[:2]!r}")
    dtype = NDARRAY_DTYPES[raw[0]]
    ndim, nb = raw[1] >> 2, 1 << (raw[1] & 3)
    shape = np.frombuffer(raw, f"<u{nb}", ndim, offset=2).astype(np.int64)
    start = 2 + ndim * nb
    count = int(np.prod(shape))
    if ndim == 0 or count * np.dtype(dtype).itemsize != len(raw) - start:
        raise ValueError(f"ndarray of shape {tuple(shape)} does not match its {len(raw)} bytes")
    return _native(np.frombuffer(raw, np.uint8, offset=start), dtype).reshape(shape).copy()


#: per-row decoders of object columns, keyed by their ColumnSpec dtype
_OBJECT_DECODERS: dict[str, Any] = {
    "str": lambda b: b.decode("utf-8"),
    "bytes": lambda b: b,
    "json": lambda b: json.loads(b.decode("utf-8")),
    "int": lambda b: int(b.decode("utf-8")),
    "float": lambda b: float(b.decode("utf-8")),
    "Decimal": lambda b: Decimal(b.decode("utf-8")),
    "ndarray": _decode_any_ndarray,
    "pkl": pickle.loads,  # parse_encoding refuses it unless allow_unsafe_types
}


def _decode_objects(data: bytes, starts: np.ndarray, sizes: np.ndarray, kind: str) -> list:
    """Python objects, one per row: the only per-row loop (objects cannot be vectorised)."""
    decode = _OBJECT_DECODERS[kind]
    out = []
    for i, (s, z) in enumerate(zip(starts.tolist(), sizes.tolist(), strict=True)):
        try:
            out.append(decode(data[s : s + z]))
        except Exception as exc:  # decoder errors vary: UnicodeDecodeError, JSONDecodeError ...
            raise ValueError(f"sample {i} does not decode: {exc}") from exc
    return out


def decode_records(
    data: bytes,
    offsets: np.ndarray,
    names: list[str],
    encodings: list[Encoding],
    columns: list[str] | None = None,
) -> Block:
    """The columns (all, or ``columns`` in that order) of a shard's records; ``data`` is the
    whole raw shard and ``offsets`` its N+1 record offsets."""
    wanted = names if columns is None else columns
    keep = [n in wanted for n in names]
    buf = np.frombuffer(data, np.uint8)
    decoded: dict[str, Column] = {}
    if all(e.size is not None for e in encodings):
        for name, col in zip(
            names, decode_fixed_records(buf, offsets, encodings, keep), strict=True
        ):
            if col is not None:
                decoded[name] = col
        return {name: decoded[name] for name in wanted}
    starts, sizes = record_layout(buf, offsets, encodings)
    for j, (name, e) in enumerate(zip(names, encodings, strict=True)):
        if not keep[j]:
            continue
        try:
            decoded[name] = decode_column(data, buf, starts[:, j], sizes[:, j], e)
        except ValueError as exc:
            raise ValueError(f"column {name!r} ({e.name}): {exc}") from exc
    return {name: decoded[name] for name in wanted}
