"""Fixed-width columns stored as bytes in native Parquet shards (manifest version 2)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream import MixLoader, MixStream, write_shards
from mixstream.errors import SourceError
from mixstream.shards.verify import verify_domain
from mixstream.sources.base import ColumnSpec
from mixstream.sources.native import NativeSource, load_manifest, read_shard
from mixstream.sources.native.byte_columns import decode, encode

DTYPES = ["uint8", "uint16", "int32", "uint32", "int64", "float16", "float32", "float64"]


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), width=st.integers(1, 9), rows=st.integers(0, 40),
       cut=st.tuples(st.integers(0, 40), st.integers(0, 40)), nulls=st.booleans(),
       chunks=st.integers(1, 3), data=st.data())
def test_encode_decode_round_trip(dtype, width, rows, cut, nulls, chunks, data):
    """Any slice, chunking and null pattern comes back value for value, as the same type."""
    x = np.arange(rows * width).astype(dtype).reshape(rows, width)
    mask = pa.array(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
                    if nulls else [False] * rows, pa.bool_())
    arr = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), width, mask=mask)
    lo, hi = sorted(min(c, rows) for c in cut)
    pieces = [arr.slice(lo, hi - lo)] * chunks
    table = pa.table({"x": pa.chunked_array(pieces, arr.type), "n": pa.chunked_array(
        [pa.array(range(hi - lo))] * chunks)})
    enc = encode(table, ["x"])
    assert enc.schema.field("x").type == pa.binary(width * np.dtype(dtype).itemsize)
    assert enc.schema.field("x").metadata[b"mixstream.dtype"] == dtype.encode()
    dec = decode(enc, {"x": ColumnSpec("fixed", dtype, width)}, ["x"])
    dec.validate(full=True)
    assert dec.schema == table.schema
    assert dec.column("x").to_pylist() == table.column("x").to_pylist()
    assert dec.slice(1).column("x").to_pylist() == table.slice(1).column("x").to_pylist()


def tokens(n: int = 700, width: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 50_000, size=(n, width), dtype=np.uint16)


def write(path, **kw):
    return write_shards({"input_ids": tokens(), "id": np.arange(700)}, path, domain="a",
                        rows_per_block=64, blocks_per_shard=4, token_column="input_ids", **kw)


def stream_all(path) -> np.ndarray:
    s = MixStream({"a": str(path)}, shuffle=False, on_exhausted="stop", token_dtype=None)
    return np.concatenate([b["input_ids"].numpy() for b in MixLoader(s, batch_size=50)])


def test_parquet_shards_store_tokens_as_bytes_and_stream_the_same(tmp_path):
    m = write(tmp_path / "bytes")
    assert m.byte_columns == ["input_ids"]
    raw = json.loads((tmp_path / "bytes" / "manifest.json").read_text())
    assert raw["version"] == 2 and raw["byte_columns"] == ["input_ids"]
    assert pq.ParquetFile(tmp_path / "bytes" / m.shards[0].path).schema_arrow.field(
        "input_ids").type == pa.binary(32)
    lists = write(tmp_path / "lists", parquet_lists=True)
    raw = json.loads((tmp_path / "lists" / "manifest.json").read_text())
    assert lists.byte_columns == [] and raw["version"] == 1 and "byte_columns" not in raw
    assert pq.ParquetFile(tmp_path / "lists" / lists.shards[0].path).schema_arrow.field(
        "input_ids").type == pa.list_(pa.uint16(), 16)
    arrow = write(tmp_path / "arrow", shard_format="arrow")
    assert arrow.byte_columns == []
    assert m.schema == lists.schema == arrow.schema
    want = stream_all(tmp_path / "lists")
    np.testing.assert_array_equal(np.sort(want, axis=0), np.sort(tokens(), axis=0))
    np.testing.assert_array_equal(stream_all(tmp_path / "bytes"), want)
    np.testing.assert_array_equal(stream_all(tmp_path / "arrow"), want)
    assert verify_domain(str(tmp_path / "bytes")) == []
    assert read_shard(tmp_path / "bytes", m.shards[0].path).equals(
        read_shard(tmp_path / "lists", lists.shards[0].path))
    assert m.shards[0].tokens == lists.shards[0].tokens == 64 * 4 * 16


def test_manifest_byte_columns_are_checked(tmp_path):
    write(tmp_path / "a")
    path = tmp_path / "a" / "manifest.json"
    good = json.loads(path.read_text())
    for change, message in (
        ({"version": 1}, "needs manifest version 2"),
        ({"byte_columns": ["id"]}, "not a fixed numeric column"),
        ({"byte_columns": ["nope"]}, "not a fixed numeric column"),
        ({"byte_columns": "input_ids"}, "a list of fixed columns"),
        ({"version": 3}, "upgrade mixstream"),
    ):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(SourceError, match=message):
            load_manifest(str(tmp_path / "a"))


def test_a_shard_whose_bytes_do_not_match_the_manifest_is_named(tmp_path):
    """A byte column of another width (a shard replaced by one of another --seq-len) is an
    error naming the file, not a silent reinterpretation."""
    m = write(tmp_path / "a")
    other = write_shards({"input_ids": tokens(700, 8), "id": np.arange(700)}, tmp_path / "b",
                         domain="a", rows_per_block=64, blocks_per_shard=4,
                         token_column="input_ids")
    victim = tmp_path / "a" / m.shards[0].path
    victim.write_bytes((tmp_path / "b" / other.shards[0].path).read_bytes())
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest["shards"][0]["bytes"] = victim.stat().st_size
    manifest["shards"][0]["sha256"] = None
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SourceError, match=r"shard-00000.parquet: columns .* differ"):
        NativeSource(tmp_path / "a").read_block(0)
    assert any("schema" in p for p in verify_domain(str(tmp_path / "a")))


def test_a_lost_manifest_is_rebuilt_by_index_with_its_byte_columns(tmp_path):
    """`mixstream-shard index` on Parquet shards mixstream wrote (manifest lost): the field
    metadata says which binary columns hold tokens, so the stream is the same, not bytes."""
    from mixstream.shards.index import index_directory

    m = write(tmp_path / "a")
    want = stream_all(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").unlink()
    got = index_directory(str(tmp_path / "a"), domain="a", token_column="input_ids")
    assert got.byte_columns == ["input_ids"] and got.schema == m.schema
    assert got.num_tokens == m.num_tokens
    np.testing.assert_array_equal(stream_all(tmp_path / "a"), want)
