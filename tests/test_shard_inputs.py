"""Input discovery, work splitting and JSON Lines chunking (mixstream.shards.inputs / jsonl)."""

from __future__ import annotations

import gzip
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.shards.errors import InputError, RecordError
from mixstream.shards.inputs import InputPiece, classify, plan_units, resolve
from mixstream.shards.jsonl import iter_line_chunks, line_base, parse_chunk
from mixstream.shards.validate import BadRecords


def test_classify():
    assert classify("a/b.jsonl") == ("jsonl", None)
    assert classify("b.JSONL.ZST") == ("jsonl", "zstd")
    assert classify("b.json.gz") == ("json", "gzip")
    assert classify("x.parquet") == ("parquet", None)
    assert classify("x.csv.zst") == ("csv", "zstd")
    assert classify("x.txt") == ("txt", None)
    assert classify("x.parquet.gz") is None
    assert classify("README.md") is None


def test_resolve_dirs_globs_and_errors(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.jsonl", "d/a.jsonl.gz", "d/sub/c.parquet", "d/README.md", "d/.hidden.jsonl",
                 "d/_SUCCESS"):
        (tmp_path / name).write_bytes(b"")
    ignored: list[str] = []
    files = resolve(str(tmp_path / "d"), ignored)
    assert [os.path.relpath(f.path, tmp_path) for f in files] == [
        "d/a.jsonl.gz", "d/b.jsonl", "d/sub/c.parquet"]
    assert [f.kind for f in files] == ["jsonl", "jsonl", "parquet"]
    assert ignored == [str(tmp_path / "d" / "README.md")]
    assert len(resolve(str(tmp_path / "d" / "*.jsonl*"))) == 2
    with pytest.raises(InputError, match=r"\*\.zst: matches no files"):
        resolve(str(tmp_path / "d" / "*.zst"))
    with pytest.raises(InputError, match="README.md: unsupported file type"):
        resolve(str(tmp_path / "d" / "README.md"))
    with pytest.raises(InputError, match="nope.jsonl: no such file"):
        resolve(str(tmp_path / "nope.jsonl"))


def test_plan_splits_big_jsonl_and_groups_small_files(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"text": "x"}\n' * 1000)  # 14,000 bytes
    for i in range(5):
        (tmp_path / f"s{i}.jsonl").write_bytes(b'{"text": "y"}\n' * 100)  # 1,400 bytes each
    files = resolve(str(tmp_path))
    units = plan_units([("d", files)], chunk_bytes=4000)
    shapes = [[(os.path.basename(p.file.path), p.start, p.stop) for p in u.pieces] for u in units]
    assert shapes == [
        [("big.jsonl", 0, 4000)], [("big.jsonl", 4000, 8000)], [("big.jsonl", 8000, 12000)],
        [("big.jsonl", 12000, 14000)],
        [("s0.jsonl", 0, None), ("s1.jsonl", 0, None), ("s2.jsonl", 0, None)],
        [("s3.jsonl", 0, None), ("s4.jsonl", 0, None)]]
    assert sum(p.disk_bytes for u in units for p in u.pieces) == 14000 + 5 * 1400


def _pieces(path, size, chunk):
    from mixstream.shards.inputs import InputFile

    f = InputFile(str(path), "jsonl", None, size, 0)
    return [InputPiece(f, s, min(s + chunk, size)) for s in range(0, size, chunk)] or [InputPiece(f)]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), min_size=0, max_size=40),
       chunk=st.integers(1, 500), read=st.integers(1, 64), final_newline=st.booleans())
def test_byte_ranges_cover_every_line_once(tmp_path_factory, lengths, chunk, read, final_newline):
    path = tmp_path_factory.mktemp("r") / "f.jsonl"
    lines = [b"x" * n for n in lengths]
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    path.write_bytes(data)
    got: list[bytes] = []
    starts: list[int] = []
    for piece in _pieces(path, len(data), chunk):
        base = line_base(piece)
        first = None
        for c in iter_line_chunks(piece, read):
            first = c.first_line if first is None else first
            got.extend(c.data.split(b"\n")[:-1])
        if first is not None:
            starts.append(base + first)
    expected = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        expected = expected[:-1]
    assert got == expected
    # every piece's line numbers continue where the previous piece stopped
    assert starts == sorted(set(starts))


def test_long_line_and_gzip(tmp_path):
    big = "é" * 300_000
    recs = [{"text": "a"}, {"text": big}, {"text": "b"}]
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    from mixstream.shards.inputs import InputFile

    piece = InputPiece(InputFile(str(path), "jsonl", "gzip", path.stat().st_size, 0))
    chunks = list(iter_line_chunks(piece, read_bytes=4096))
    bad = BadRecords()
    texts = [t for c in chunks
             for t in parse_chunk(c, None, lambda i: str(i), bad)[0].column("text").to_pylist()]
    assert texts == ["a", big, "b"]


def _parse(tmp_path, data: bytes, bad: BadRecords):
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    piece = _pieces(path, len(data), len(data) + 1)[0]
    out = []
    for c in iter_line_chunks(piece, 1 << 20):
        table, locate = parse_chunk(c, None, lambda i: f"f.jsonl:{i + 1}", bad)
        out.append((table, locate))
    return out


def test_malformed_line_is_named(tmp_path):
    data = b'{"text": "a"}\n\n{"text": "b"}\n{"text": oops}\n{"text": "c"}\n'
    with pytest.raises(RecordError, match=r"f.jsonl:4: malformed JSON"):
        _parse(tmp_path, data, BadRecords())
    bad = BadRecords(skip=True)
    [(table, locate)] = _parse(tmp_path, data, bad)
    assert table.column("text").to_pylist() == ["a", "b", "c"]
    assert [locate(i) for i in range(3)] == ["f.jsonl:1", "f.jsonl:3", "f.jsonl:5"]
    assert bad.count == 1 and bad.examples[0].startswith("f.jsonl:4: malformed JSON")


def test_blank_lines_keep_line_numbers(tmp_path):
    data = b'\n{"text": "a"}\n   \n\n{"text": "b"}\r\n'
    [(table, locate)] = _parse(tmp_path, data, BadRecords())
    assert table.column("text").to_pylist() == ["a", "b"]
    assert [locate(0), locate(1)] == ["f.jsonl:2", "f.jsonl:5"]


def test_non_object_and_two_values_on_a_line(tmp_path):
    data = b'{"text": "a"}\n[1, 2]\n{"text": "b"}{"text": "c"}\n'
    bad = BadRecords(skip=True)
    [(table, _)] = _parse(tmp_path, data, bad)
    assert table.column("text").to_pylist() == ["a"]
    assert bad.count == 2
    assert bad.examples[0] == "f.jsonl:2: not a JSON object (a JSON array)"
    assert bad.examples[1] == "f.jsonl:3: 2 JSON values on one line"
