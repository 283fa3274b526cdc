"""Reading one source from several threads at once: reader threads, or a reader and its
background decode of the next window. A shared pyarrow ``ParquetFile`` is not thread-safe: it
failed with "ReadRangeCache did not find matching cache entry" (reported as a corrupt shard) or
deadlocked (a reader-threads benchmark hung); each thread now opens its own handle."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixstream.shards.writer import write_shards
from mixstream.sources.native import NativeSource
from mixstream.sources.parquet import ParquetSource


def _hammer(source, threads: int = 4, rounds: int = 30) -> None:
    n = len(source.block_sizes)
    errors: list[BaseException] = []
    first = np.concatenate([source.read_block(i)["input_ids"][:, 0] for i in range(n)])

    def work(k: int) -> None:
        try:
            for r in range(rounds):
                for i in range(n):
                    b = (i * 7 + k + r) % n
                    got = source.read_block(b)["input_ids"][:, 0]
                    start = int(np.sum(source.block_sizes[:b]))
                    assert np.array_equal(got, first[start:start + len(got)])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not [t for t in ts if t.is_alive()], "a reader thread hung"
    assert not errors, errors[0]


def _table(rows: int = 16 * 512, width: int = 256) -> pa.Table:
    toks = np.random.default_rng(0).integers(0, 60000, (rows, width)).astype(np.uint16)
    toks[:, 0] = np.arange(rows) % 60000
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(toks.ravel()),
                                                                     width)})


def test_native_parquet_shards_read_from_many_threads(tmp_path):
    write_shards(_table(), tmp_path / "d", domain="d", rows_per_block=512, blocks_per_shard=8)
    _hammer(NativeSource(str(tmp_path / "d"), verify=False))


def test_plain_parquet_read_from_many_threads(tmp_path):
    pq.write_table(_table(), tmp_path / "x.parquet", row_group_size=512)
    _hammer(ParquetSource(str(tmp_path / "x.parquet")))
