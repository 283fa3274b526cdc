"""Find input files (files, globs, directories, HF ``save_to_disk`` folders) and split them
into work units.

The split depends only on the files and ``chunk_bytes``, never on the number of workers, so
the shards that come out are the same whatever ``--workers`` is. Uncompressed JSON Lines files
are split at line boundaries by byte range, Parquet files by row groups and HF datasets by
rows; other files are read whole. Small files are grouped until a unit holds ``chunk_bytes``.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import pyarrow.parquet as pq

from .errors import InputError
from .hf import load_hf_dataset

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
         ".csv": "csv", ".txt": "txt"}
SUPPORTED = ".jsonl .ndjson .json .parquet .csv .txt (+ .gz/.zst except parquet), HF save_to_disk"


@dataclass(frozen=True)
class InputFile:
    path: str
    kind: str  # jsonl | json | parquet | csv | txt | hf
    compression: str | None
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class InputPiece:
    """Part of one input: bytes ``[start, stop)`` (jsonl), row groups or rows (parquet, hf)."""

    file: InputFile
    start: int = 0
    stop: int | None = None  # None: to the end
    share: int | None = None  # bytes of the file on disk this piece accounts for (progress)

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop is None

    @property
    def disk_bytes(self) -> int:
        return self.file.size if self.share is None else self.share


@dataclass(frozen=True)
class WorkUnit:
    index: int
    group: int  # index of the input group (one per --domain, or the only one)
    domain: str | None  # None: taken from each record's domain field
    pieces: tuple[InputPiece, ...]


def classify(path: str) -> tuple[str, str | None] | None:
    """``(kind, compression)`` from the file name, or None for unsupported names."""
    name = os.path.basename(path).lower()
    root, ext = os.path.splitext(name)
    compression = COMPRESSIONS.get(ext)
    if compression:
        root, ext = os.path.splitext(root)
    kind = KINDS.get(ext)
    if kind is None or (kind == "parquet" and compression):
        return None
    return kind, compression


def is_hf_dataset_dir(path: str) -> bool:
    return os.path.isdir(path) and (
        os.path.exists(os.path.join(path, "state.json"))
        or os.path.exists(os.path.join(path, "dataset_dict.json")))


def _input_file(path: str, kind: str, compression: str | None) -> InputFile:
    st = os.stat(path)
    return InputFile(os.path.abspath(path), kind, compression, st.st_size, st.st_mtime_ns)


def _hf_dir(path: str) -> InputFile:
    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as f:
            splits = json.load(f).get("splits", [])
        raise InputError(path, f"is a DatasetDict with splits {splits}",
                         f"give one split folder, e.g. {os.path.join(path, str(splits[0]) if splits else 'train')}")
    size = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    return InputFile(os.path.abspath(path), "hf", None, size,
                     os.stat(os.path.join(path, "state.json")).st_mtime_ns)


def _walk(directory: str, ignored: list[str]) -> list[InputFile]:
    found: list[InputFile] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for d in list(dirs):
            if is_hf_dataset_dir(os.path.join(root, d)):
                found.append(_hf_dir(os.path.join(root, d)))
                dirs.remove(d)
        for name in sorted(files):
            if name.startswith((".", "_")):
                continue
            path = os.path.join(root, name)
            kc = classify(path)
            if kc is None:
                ignored.append(path)
            else:
                found.append(_input_file(path, *kc))
    return found


def resolve(spec: str, ignored: list[str] | None = None) -> list[InputFile]:
    """Files named by ``spec`` (a file, glob or directory), sorted; errors name the spec.

    Files with unsupported names inside directories are appended to ``ignored`` so the
    caller can report them; an unsupported file named explicitly is an error.
    """
    ignored = [] if ignored is None else ignored
    if glob.has_magic(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise InputError(spec, "matches no files", "check the pattern (quote it so the "
                             "shell does not expand it)")
    elif not os.path.exists(spec):
        raise InputError(spec, "no such file or directory", "check the path")
    else:
        matches = [spec]
    out: list[InputFile] = []
    for path in matches:
        if is_hf_dataset_dir(path):
            out.append(_hf_dir(path))
        elif os.path.isdir(path):
            out.extend(_walk(path, ignored))
        else:
            kc = classify(path)
            if kc is None:
                raise InputError(path, "unsupported file type", f"supported: {SUPPORTED}")
            out.append(_input_file(path, *kc))
    if not out:
        raise InputError(spec, "contains no input files", f"supported: {SUPPORTED}")
    return sorted(set(out), key=lambda f: f.path)


def _hf_rows(path: str) -> int:
    return len(load_hf_dataset(path))


def split_file(f: InputFile, chunk_bytes: int) -> list[InputPiece]:
    """Pieces of one file of about ``chunk_bytes`` each (deterministic)."""
    if f.size <= chunk_bytes:
        return [InputPiece(f)]
    if f.kind == "jsonl" and f.compression is None:
        return [InputPiece(f, s, min(s + chunk_bytes, f.size), min(chunk_bytes, f.size - s))
                for s in range(0, f.size, chunk_bytes)]
    if f.kind == "parquet":
        try:
            meta = pq.ParquetFile(f.path).metadata
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise InputError(f.path, f"not a readable Parquet file ({e})",
                             "check the file or remove it from the inputs") from e
        ranges: list[tuple[int, int]] = []
        first, acc = 0, 0
        for i in range(meta.num_row_groups):
            acc += meta.row_group(i).total_byte_size
            if acc >= chunk_bytes:
                ranges.append((first, i + 1))
                first, acc = i + 1, 0
        if first < meta.num_row_groups or not ranges:
            ranges.append((first, meta.num_row_groups))
        if len(ranges) == 1:
            return [InputPiece(f)]
        counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        total = max(sum(counts), 1)
        return [InputPiece(f, a, b, f.size * sum(counts[a:b]) // total) for a, b in ranges]
    if f.kind == "hf":
        rows = _hf_rows(f.path)
        per = max(1, rows * chunk_bytes // max(f.size, 1))
        if per >= rows:
            return [InputPiece(f)]
        return [InputPiece(f, s, min(s + per, rows), f.size * (min(s + per, rows) - s) // rows)
                for s in range(0, rows, per)]
    return [InputPiece(f)]


def plan_units(groups: list[tuple[str | None, list[InputFile]]],
               chunk_bytes: int) -> list[WorkUnit]:
    """Work units for every input group, numbered in input order."""
    if chunk_bytes < 1:
        raise InputError("--chunk-mb", f"must be positive, got {chunk_bytes} bytes")
    units: list[WorkUnit] = []
    for g, (domain, files) in enumerate(groups):
        batch: list[InputPiece] = []
        acc = 0
        for f in files:
            for piece in split_file(f, chunk_bytes):
                if not piece.whole:
                    if batch:
                        units.append(WorkUnit(len(units), g, domain, tuple(batch)))
                        batch, acc = [], 0
                    units.append(WorkUnit(len(units), g, domain, (piece,)))
                    continue
                batch.append(piece)
                acc += f.size
                if acc >= chunk_bytes:
                    units.append(WorkUnit(len(units), g, domain, tuple(batch)))
                    batch, acc = [], 0
        if batch:
            units.append(WorkUnit(len(units), g, domain, tuple(batch)))
    return units
