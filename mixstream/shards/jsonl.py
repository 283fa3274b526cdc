"""JSON Lines through ``pyarrow.json``, in chunks of whole lines, with errors naming the line.

The fast path parses a whole chunk at once. Only when pyarrow rejects a chunk are its lines
parsed in small groups, then one by one, to find the bad line(s); nothing is parsed by hand.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from .errors import SKIP_HINT, InputError, RecordError
from .inputs import InputPiece
from .validate import BadRecords, Locate

GROUP_LINES = 256
_ROW = re.compile(r"\s*in row \d+\s*$")
_TYPE = re.compile(r"JSON parse error: Column\(/?([^)]*)\) changed from (\w+) to (\w+)")


@dataclass
class LineChunk:
    data: bytes  # complete lines, ending with b"\n"
    first_line: int  # lines of the piece before this chunk
    input_bytes: int


def _open(piece: InputPiece) -> pa.NativeFile:
    f = piece.file
    if f.compression is None:
        return pa.OSFile(f.path, "rb")  # seekable, for byte-range pieces
    return pa.input_stream(f.path, compression=f.compression)


def _first_line_start(stream: pa.NativeFile, start: int, read_bytes: int) -> int:
    """Offset of the first line starting at or after ``start``; leaves the stream there."""
    if start == 0:
        return 0
    stream.seek(start - 1)
    if stream.read(1) == b"\n":
        return start
    pos = start
    while True:  # mid-line: that line belongs to the previous piece
        block = stream.read(read_bytes)
        if not block:
            return pos
        i = block.find(b"\n")
        if i >= 0:
            stream.seek(pos + i + 1)
            return pos + i + 1
        pos += len(block)


def iter_line_chunks(piece: InputPiece, read_bytes: int) -> Iterator[LineChunk]:
    """Chunks of complete lines whose first byte lies in ``[piece.start, piece.stop)``."""
    stop = piece.stop
    with _open(piece) as stream:
        pos = _first_line_start(stream, piece.start, read_bytes)  # file offset of carry[0]
        carry = b""
        lines_before = 0
        while stop is None or pos < stop:
            block = stream.read(read_bytes)
            buf = carry + block
            if not block:  # end of file: a last line without newline
                if buf:
                    yield LineChunk(buf + b"\n", lines_before, len(buf))
                return
            if stop is not None:
                k = buf.find(b"\n", max(stop - pos - 1, 0))
                if k >= 0:  # the line holding byte stop-1 is complete: the piece ends there
                    yield LineChunk(buf[: k + 1], lines_before, k + 1)
                    return
            end = buf.rfind(b"\n") + 1
            if end == 0:
                carry = buf  # a line longer than read_bytes: keep reading
                continue
            data, carry = buf[:end], buf[end:]
            yield LineChunk(data, lines_before, end)
            lines_before += data.count(b"\n")
            pos += end


def line_base(piece: InputPiece, read_bytes: int = 1 << 24) -> int:
    """Number of lines in the file before ``piece`` (only needed for error messages)."""
    if not piece.start:
        return 0
    count, left = 0, piece.start
    with _open(piece) as stream:
        while left > 0:
            block = stream.read(min(read_bytes, left))
            if not block:
                break
            count += block.count(b"\n")
            left -= len(block)
        stream.seek(piece.start - 1)
        if stream.read(1) != b"\n":
            count += 1  # the partial first line belongs to the previous piece
    return count


def _read(data: bytes, schema: pa.Schema | None) -> pa.Table:
    ro = pj.ReadOptions(use_threads=False, block_size=min(max(len(data) + 1, 1 << 16), 2**31 - 1))
    po = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    return pj.read_json(io.BytesIO(data), read_options=ro, parse_options=po)


def _problem(e: Exception) -> str:
    msg = _ROW.sub("", str(e))
    m = _TYPE.search(msg)
    if m and not m.group(1):
        return f"not a JSON object (a JSON {m.group(3)})"
    if m:
        return f"field {m.group(1)!r} is a {m.group(3)}, other records have a {m.group(2)}"
    return f"malformed JSON ({msg})"


def parse_chunk(chunk: LineChunk, schema: pa.Schema | None, where: Locate,
                bad: BadRecords) -> tuple[pa.Table, Locate]:
    """Parse one chunk; returns the table and a row -> location function.

    ``where(i)`` names line ``i`` of the piece (0-based). A line pyarrow rejects is a bad
    record (raised, or counted with --skip-bad).
    """
    data = chunk.data
    try:
        table = _read(data, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _parse_lines(chunk, schema, where, bad)
    if table.num_rows == data.count(b"\n"):  # one record per line, no blank lines

        def locate(r: int) -> str:
            return where(chunk.first_line + r)

        return table, locate
    nonblank = [i for i, ln in enumerate(data.split(b"\n")[:-1]) if ln.strip()]
    if table.num_rows != len(nonblank):  # a line with several JSON values
        return _parse_lines(chunk, schema, where, bad)
    return table, _locator(chunk.first_line, nonblank, where)


def _parse_lines(chunk: LineChunk, schema: pa.Schema | None, where: Locate,
                 bad: BadRecords) -> tuple[pa.Table, Locate]:
    lines = chunk.data.split(b"\n")[:-1]
    numbered = [(i, ln) for i, ln in enumerate(lines) if ln.strip()]
    tables: list[pa.Table] = []
    kept: list[int] = []
    for g in range(0, len(numbered), GROUP_LINES):
        group = numbered[g : g + GROUP_LINES]
        try:
            t = _read(b"\n".join(ln for _, ln in group) + b"\n", schema)
            if t.num_rows == len(group):
                tables.append(t)
                kept.extend(i for i, _ in group)
                continue
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        for i, ln in group:  # find the bad line(s)
            try:
                t = _read(ln + b"\n", schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                bad.add(RecordError(where(chunk.first_line + i), _problem(e), SKIP_HINT))
                continue
            if t.num_rows != 1:
                bad.add(RecordError(where(chunk.first_line + i),
                                    f"{t.num_rows} JSON values on one line", SKIP_HINT))
                continue
            tables.append(t)
            kept.append(i)
    if not tables:
        empty = schema.empty_table() if schema is not None else pa.table({})
        return empty, lambda r: where(chunk.first_line)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(where(chunk.first_line + kept[0]),
                         f"records disagree on field types ({e})",
                         "give every record the same field types, or --drop the field") from e
    return table, _locator(chunk.first_line, kept, where)


def _locator(first_line: int, lines: list[int], where: Locate) -> Locate:
    line_of = np.asarray(lines, dtype=np.int64)

    def locate(r: int) -> str:
        return where(first_line + int(line_of[r]))

    return locate
