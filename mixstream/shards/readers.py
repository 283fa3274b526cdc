"""Read one input piece as Arrow tables, through pyarrow (JSON Lines, Parquet, CSV) or the
``datasets`` library (text files, JSON arrays, ``save_to_disk`` folders).

Each :class:`Chunk` carries a function naming the file and line (or row) of any of its rows,
and how many bytes of the input file on disk it covered (for progress).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .errors import SKIP_HINT, InputError, RecordError
from .hf import load_hf_dataset, load_local
from .inputs import InputFile, InputPiece
from .jsonl import iter_line_chunks, line_base, parse_chunk
from .validate import BadRecords, Locate

SAMPLE_BY = ("document", "paragraph", "line")


@dataclass(frozen=True)
class ReadOptions:
    read_bytes: int = 8 << 20  # bytes of input per chunk
    sample_by: str = "document"  # .txt files: one document per file, paragraph or line
    text_field: str = "text"  # name given to the text of .txt files


@dataclass
class Chunk:
    table: pa.Table
    locate: Locate
    disk_bytes: int  # bytes of the input file this chunk accounts for


def read_piece(piece: InputPiece, schema: pa.Schema | None, opts: ReadOptions,
               bad: BadRecords) -> Iterator[Chunk]:
    """Tables of ``piece``'s records; JSON Lines get ``schema`` as explicit field types."""
    kind = piece.file.kind
    if kind == "json" and _is_json_array(piece.file):
        kind = "json-array"
    readers = {"jsonl": _read_jsonl, "json": _read_jsonl, "parquet": _read_parquet,
               "csv": _read_csv, "txt": _read_txt, "hf": _read_hf, "json-array": _read_json_array}
    yield from readers[kind](piece, schema, opts, bad)


def _is_json_array(f: InputFile) -> bool:
    with pa.input_stream(f.path, compression=f.compression) as s:
        head = s.read(4096).lstrip()
    return head.startswith(b"[")


def _read_jsonl(piece: InputPiece, schema: pa.Schema | None, opts: ReadOptions,
                bad: BadRecords) -> Iterator[Chunk]:
    path = piece.file.path
    base: list[int] = []

    def where(i: int) -> str:  # line i of the piece (0-based)
        if not base:
            base.append(line_base(piece))
        return f"{path}:{base[0] + i + 1}"

    ratio = 1.0
    if piece.file.compression:  # progress in compressed bytes: scale by the observed ratio
        ratio = piece.file.size / max(_uncompressed_estimate(piece.file), 1)
    for chunk in iter_line_chunks(piece, opts.read_bytes):
        table, locate = parse_chunk(chunk, schema, where, bad)
        yield Chunk(table, locate, int(chunk.input_bytes * ratio))


def _uncompressed_estimate(f: InputFile) -> int:
    if f.compression == "gzip":  # ISIZE trailer: uncompressed size mod 2**32
        with open(f.path, "rb") as fh:
            fh.seek(max(f.size - 4, 0))
            isize = int.from_bytes(fh.read(4), "little")
        return isize if isize >= f.size else f.size * 4
    if f.compression == "zstd":
        import zstandard

        with open(f.path, "rb") as fh:
            try:
                size = zstandard.frame_content_size(fh.read(18))
            except zstandard.ZstdError:
                size = -1
        return size if size > 0 else f.size * 4
    return f.size


def _read_parquet(piece: InputPiece, schema: pa.Schema | None, opts: ReadOptions,
                  bad: BadRecords) -> Iterator[Chunk]:
    path = piece.file.path
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise InputError(path, f"not a readable Parquet file ({e})",
                         "check the file or remove it from the inputs") from e
    meta = pf.metadata
    groups = list(range(piece.start, meta.num_row_groups if piece.stop is None else piece.stop))
    row0 = sum(meta.row_group(i).num_rows for i in range(piece.start))
    for g in groups:
        rg = meta.row_group(g)
        per_row = max(rg.total_byte_size // max(rg.num_rows, 1), 1)
        batch_rows = int(min(max(opts.read_bytes // per_row, 64), 1 << 16))
        disk = rg.total_byte_size
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[g], use_threads=False):
                start = row0

                def locate(r: int, start: int = start) -> str:
                    return f"{path}: row {start + r + 1}"

                share = disk * batch.num_rows // max(rg.num_rows, 1)
                yield Chunk(pa.Table.from_batches([batch]), locate, share)
                row0 += batch.num_rows
        except (OSError, pa.ArrowInvalid) as e:
            raise InputError(f"{path}: row group {g}", f"unreadable ({e})",
                             "the file is damaged; re-create it") from e


def _read_csv(piece: InputPiece, schema: pa.Schema | None, opts: ReadOptions,
              bad: BadRecords) -> Iterator[Chunk]:
    path = piece.file.path
    problems: list[RecordError] = []

    def on_invalid(row: Any) -> str:
        err = RecordError(f"{path}: record {row.number}", f"{row.actual_columns} columns, "
                          f"expected {row.expected_columns}", SKIP_HINT)
        if bad.skip:
            bad.add(err)
            return "skip"
        problems.append(err)
        return "error"

    types = {f.name: f.type for f in schema} if schema is not None else None
    raw = pa.OSFile(path, "rb")
    stream = (pa.CompressedInputStream(raw, piece.file.compression)
              if piece.file.compression else raw)
    rows = 0
    try:
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(use_threads=False, block_size=opts.read_bytes),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                  check_utf8=False),  # checked per record
        )
        last = 0
        for batch in reader:
            start = rows

            def locate(r: int, start: int = start) -> str:
                return f"{path}: record {start + r + 2}"  # +1 header, +1 one-based

            pos = raw.tell()
            yield Chunk(pa.Table.from_batches([batch]), locate, pos - last)
            last, rows = pos, rows + batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        if problems:
            raise problems[0] from e
        raise InputError(path, f"CSV error ({e})", "fix the file or remove it from the "
                         "inputs") from e
    finally:
        raw.close()


def _read_txt(piece: InputPiece, schema: pa.Schema | None, opts: ReadOptions,
              bad: BadRecords) -> Iterator[Chunk]:
    path = piece.file.path
    if opts.sample_by not in SAMPLE_BY:
        raise InputError("--txt-sample-by", f"unknown mode {opts.sample_by!r}",
                         f"use one of {SAMPLE_BY}")
    ds = load_local("text", path, sample_by=opts.sample_by)
    rows = 0
    tables = iter(ds.iter(batch_size=4096))
    while True:
        try:
            table = next(tables)
        except StopIteration:
            return
        except UnicodeDecodeError:  # datasets can neither name nor skip the bad line
            yield from _read_txt_checked(piece, opts, bad, skip=rows)
            return
        start = rows

        def locate(r: int, start: int = start) -> str:
            return f"{path}: {opts.sample_by} {start + r + 1}"

        if opts.text_field != "text":
            table = table.rename_columns([opts.text_field])
        rows += table.num_rows
        yield Chunk(table, locate, 0)


def _txt_records(piece: InputPiece, sample_by: str) -> Iterator[tuple[str, int]]:
    """``(record, first line)`` of a text file as ``datasets``' text builder splits it
    (universal newlines; lines without their break; paragraphs split at blank lines, empty
    ones dropped), with invalid bytes kept as surrogate escapes so they can be found."""
    raw = pa.input_stream(piece.file.path, compression=piece.file.compression)
    with io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape") as f:
        if sample_by == "line":
            for i, row in enumerate(f):
                yield row.rstrip("\n"), i + 1
            return
        text = f.read()
    if sample_by == "document":
        yield text, 1
        return
    line = 1
    for part in text.split("\n\n"):
        if part:
            yield part, line
        line += part.count("\n") + 2


def _read_txt_checked(piece: InputPiece, opts: ReadOptions, bad: BadRecords,
                      skip: int) -> Iterator[Chunk]:
    """The text file's records after the first ``skip``; a record with bytes that are not
    UTF-8 is a bad record naming its line (raised, or counted with --skip-bad)."""
    path = piece.file.path
    texts: list[str] = []
    where: list[str] = []
    index = 0
    for record, line in _txt_records(piece, opts.sample_by):
        index += 1
        if index <= skip:
            continue
        try:
            record.encode("utf-8")
        except UnicodeEncodeError as e:
            byte = record[e.start].encode("utf-8", "surrogateescape")
            bad.add(RecordError(f"{path}:{line + record.count(chr(10), 0, e.start)}",
                                f"not valid UTF-8 (byte {byte!r} in {opts.sample_by} {index})",
                                f"fix the file's encoding, {SKIP_HINT}"))
            continue
        texts.append(record)
        where.append(f"{path}: {opts.sample_by} {index}")
    yield Chunk(pa.table({opts.text_field: pa.array(texts, pa.string())}),
                lambda r: where[r], 0)


def _position(e: Exception, path: str, compression: str | None) -> str:
    """``path:line`` from a 'position N' (byte offset) in a JSON error message, if any."""
    m = re.search(r"position (\d+)", str(e))
    if not m:
        return path
    with pa.input_stream(path, compression=compression) as s:
        lines = s.read(int(m.group(1))).count(b"\n") + 1
    return f"{path}:{lines}"


def _read_json_array(piece: InputPiece, schema: pa.Schema | None, opts: ReadOptions,
                     bad: BadRecords) -> Iterator[Chunk]:
    path = piece.file.path
    ds = load_local("json", path)
    rows = 0
    try:
        for table in ds.iter(batch_size=4096):
            start = rows

            def locate(r: int, start: int = start) -> str:
                return f"{path}: element {start + r + 1}"

            rows += table.num_rows
            yield Chunk(table, locate, 0)
    except (ValueError, pa.ArrowInvalid) as e:
        raise InputError(_position(e, path, piece.file.compression),
                         f"malformed JSON ({e})", "fix the file (a JSON array of objects, or "
                         "one object per line; --skip-bad can skip bad lines of JSON Lines, "
                         "not records inside one JSON array)") from e


def _read_hf(piece: InputPiece, schema: pa.Schema | None, opts: ReadOptions,
             bad: BadRecords) -> Iterator[Chunk]:
    path = piece.file.path
    ds = load_hf_dataset(path)
    if not hasattr(ds, "with_format") or hasattr(ds, "keys"):
        raise InputError(path, "is not a single Dataset", "give one split folder")
    ds = ds.with_format("arrow")
    n = len(ds)
    stop = n if piece.stop is None else piece.stop
    per_row = max(piece.file.size // max(n, 1), 1)
    step = int(min(max(opts.read_bytes // per_row, 64), 1 << 16))
    for s in range(piece.start, stop, step):
        e = min(s + step, stop)

        def locate(r: int, s: int = s) -> str:
            return f"{path}: row {s + r + 1}"

        yield Chunk(ds[s:e], locate, per_row * (e - s))
