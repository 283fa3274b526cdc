"""Shared fixtures: small token corpora in every source format the core reads."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixstream.shards.writer import write_shards

SEQ = 16
SIZES = {"a": 700, "b": 500, "c": 300}
ID_BASE = 1_000_000  # sample id = domain_index * ID_BASE + row


def domain_table(index: int, n: int, seq: int = SEQ) -> dict[str, np.ndarray]:
    ids = np.arange(n, dtype=np.int64) + index * ID_BASE
    tokens = (ids[:, None] * 7 + np.arange(seq)[None, :]) % 60_000
    return {"id": ids, "input_ids": tokens.astype(np.uint16)}


def to_arrow(cols: dict[str, np.ndarray]) -> pa.Table:
    tok = cols["input_ids"]
    return pa.table({
        "id": cols["id"],
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(tok.ravel()), tok.shape[1]),
    })


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """{format: {domain: path}} for native, parquet and hf formats of the same data."""
    root = tmp_path_factory.mktemp("corpus")
    out: dict[str, dict[str, str]] = {"native": {}, "parquet": {}, "hf": {}, "arrow": {}}
    import datasets

    for i, (name, n) in enumerate(SIZES.items()):
        cols = domain_table(i, n)
        table = to_arrow(cols)
        native = root / "native" / name
        write_shards(table, native, domain=name, rows_per_block=64, blocks_per_shard=4,
                     token_column="input_ids")
        out["native"][name] = str(native)
        arrow = root / "arrow" / name
        write_shards(table, arrow, domain=name, rows_per_block=50, blocks_per_shard=3,
                     shard_format="arrow", token_column="input_ids")
        out["arrow"][name] = str(arrow)
        pdir = root / "parquet" / name
        os.makedirs(pdir)
        half = n // 2
        pq.write_table(table.slice(0, half), pdir / "part-0.parquet", row_group_size=40)
        pq.write_table(table.slice(half), pdir / "part-1.parquet", row_group_size=40)
        out["parquet"][name] = str(pdir / "*.parquet")
        hdir = root / "hf" / name
        datasets.Dataset(table).save_to_disk(str(hdir))
        out["hf"][name] = str(hdir)
    return out


def domain_of(ids: np.ndarray) -> np.ndarray:
    return ids // ID_BASE
