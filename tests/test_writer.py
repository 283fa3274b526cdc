"""mixstream.shards.writer.write_shards: layout, manifest, determinism, atomicity, bad input."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixstream.shards.errors import ShardError
from mixstream.shards.writer import write_shards
from mixstream.sources.arrow import block_from_arrow
from mixstream.sources.base import ColumnSpec, Ragged
from mixstream.sources.native import read_shard
from mixstream.sources.native.manifest import load_manifest


def _files(d: str) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_fixed_tokens_from_2d_numpy(tmp_path):
    ids = np.arange(2500 * 8, dtype=np.uint16).reshape(2500, 8)
    m = write_shards({"input_ids": ids, "doc": np.arange(2500)}, tmp_path, domain="code",
                     rows_per_block=100, blocks_per_shard=10, token_column="input_ids")
    assert [s.samples for s in m.shards] == [1000, 1000, 500]
    assert m.shards[-1].blocks == [100] * 5
    assert m.schema["input_ids"] == ColumnSpec("fixed", "uint16", 8)
    assert m.stats == {"documents": 2500, "samples": 2500, "tokens": 20000,
                       "bytes": sum(s.bytes for s in m.shards)}
    loaded = load_manifest(str(tmp_path))
    assert loaded.to_json() == m.to_json()
    rows = []
    for shard in loaded.shards:
        pf = pq.ParquetFile(tmp_path / shard.path)
        assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == shard.blocks
        assert os.path.getsize(tmp_path / shard.path) == shard.bytes
        rows.append(block_from_arrow(read_shard(tmp_path, shard.path))["input_ids"])
    np.testing.assert_array_equal(np.concatenate(rows), ids)


def test_records_with_variable_token_arrays_become_lists(tmp_path):
    rng = np.random.default_rng(0)
    recs = [{"input_ids": rng.integers(0, 70000, size=int(n), dtype=np.uint32), "src": f"s{i}"}
            for i, n in enumerate(rng.integers(0, 50, size=300))]
    m = write_shards(iter(recs), tmp_path, domain="web", rows_per_block=64,
                     token_column="input_ids", shard_format="arrow")
    assert m.schema["input_ids"] == ColumnSpec("ragged", "uint32")
    assert m.num_tokens == sum(len(r["input_ids"]) for r in recs)
    with pa.ipc.open_file(tmp_path / m.shards[0].path) as reader:
        sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        block = block_from_arrow(reader.get_batch(1))
    assert sizes == m.shards[0].blocks == [64, 64, 64, 64, 44]
    col = block["input_ids"]
    assert isinstance(col, Ragged)
    np.testing.assert_array_equal(col.row(3), recs[67]["input_ids"])
    assert block["src"][0] == "s64"


def test_same_input_gives_identical_bytes(tmp_path):
    table = pa.table({"text": [f"doc {i} " * (i % 7) for i in range(3000)],
                      "n": list(range(3000))})
    for fmt in ("parquet", "arrow"):
        a = write_shards(table, tmp_path / f"a{fmt}", domain="d", rows_per_block=256,
                         shard_format=fmt)
        b = write_shards(table.to_batches(max_chunksize=77), tmp_path / f"b{fmt}", domain="d",
                         rows_per_block=256, shard_format=fmt)
        assert _files(str(tmp_path / f"a{fmt}")) == _files(str(tmp_path / f"b{fmt}"))
        assert a.shards == b.shards


def test_shard_bytes_target(tmp_path):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 60000, size=(4000, 64), dtype=np.uint16)  # ~512 KB, incompressible
    m = write_shards({"input_ids": ids}, tmp_path, domain="d", rows_per_block=250,
                     blocks_per_shard=None, shard_bytes=100_000, token_column="input_ids")
    assert len(m.shards) >= 4
    assert all(s.bytes >= 100_000 for s in m.shards[:-1])
    assert all(s.bytes < 100_000 + 40_000 for s in m.shards)  # at most one block over


def test_schema_mismatch_names_batch(tmp_path):
    t1 = pa.table({"text": ["a", "b"]})
    t2 = pa.table({"text": [1, 2]})
    with pytest.raises(ShardError, match=r"batch 2.*'text' is int64.*string"):
        write_shards([t1, t2], tmp_path, domain="d")
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))  # no temp left behind


def test_record_field_mismatch_names_record(tmp_path):
    recs = [{"text": "a", "n": 1}] * 5 + [{"text": "b"}]
    with pytest.raises(ShardError, match=r"record 5: fields \['text'\] differ"):
        write_shards(recs, tmp_path, domain="d")


def test_null_column_in_later_batch_is_cast(tmp_path):
    recs = [{"text": "a", "meta": "x"}] * 3 + [{"text": "b", "meta": None}] * 3
    m = write_shards(recs, tmp_path, domain="d", rows_per_block=3)
    assert m.schema["meta"] == ColumnSpec("object", "str")
    assert pq.read_table(tmp_path / m.shards[0].path).column("meta").null_count == 3


def test_empty_input_is_an_error(tmp_path):
    with pytest.raises(ShardError, match="no rows to write.*empty input"):
        write_shards([], tmp_path, domain="d")
    assert not os.path.exists(tmp_path / "manifest.json")


def test_crash_mid_shard_leaves_no_partial_shard(tmp_path):
    def gen():
        for i in range(10):
            yield pa.table({"x": np.arange(100) + 100 * i})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_shards(gen(), tmp_path, domain="d", rows_per_block=100, blocks_per_shard=4)
    # two complete shards were renamed into place; the third (partial) one is gone
    assert sorted(os.listdir(tmp_path)) == ["shard-00000.parquet", "shard-00001.parquet"]


def test_existing_manifest_needs_overwrite(tmp_path):
    write_shards({"x": np.arange(5000)}, tmp_path, domain="d", rows_per_block=100,
                 blocks_per_shard=10)
    assert len(os.listdir(tmp_path)) == 6
    with pytest.raises(ShardError, match="overwrite=True"):
        write_shards({"x": np.arange(10)}, tmp_path, domain="d")
    m = write_shards({"x": np.arange(10)}, tmp_path, domain="d", overwrite=True)
    assert m.num_samples == 10
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "shard-00000.parquet"]


def test_bad_options(tmp_path):
    with pytest.raises(ShardError, match="unknown shard format 'csv'"):
        write_shards({"x": [1]}, tmp_path, domain="d", shard_format="csv")
    with pytest.raises(ShardError, match="compression 'gzip' is not available for arrow"):
        write_shards({"x": [1]}, tmp_path, domain="d", shard_format="arrow", compression="gzip")
    with pytest.raises(ShardError, match="token column 'ids' is not among"):
        write_shards({"x": [1]}, tmp_path, domain="d", token_column="ids")
    with pytest.raises(ShardError, match="3 dimensions"):
        write_shards({"x": np.zeros((2, 2, 2))}, tmp_path, domain="d")


def test_block_bytes_caps_big_rows(tmp_path):
    texts = ["x" * 1000] * 50 + ["y" * 20_000] + ["z" * 10] * 100
    m = write_shards({"text": texts}, tmp_path, domain="d", rows_per_block=64,
                     block_bytes=10_000)
    blocks = [b for s in m.shards for b in s.blocks]
    assert sum(blocks) == len(texts)
    # 10 rows of 1,000 bytes fill 10,000; a row bigger than block_bytes gets a block of its
    # own; then small rows: rows_per_block rules
    assert blocks == [10, 10, 10, 10, 10, 1, 64, 36]
    got = [t for s in m.shards for t in pq.read_table(tmp_path / s.path).column("text").to_pylist()]
    assert got == texts
