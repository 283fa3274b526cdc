"""Arrow -> numpy without ``Array.to_numpy``: same values, zero-copy, and no pandas import on
the first batch (its first call imported pandas, ~0.15 s on the critical path)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.sources.arrow import column_from_arrow, numeric_to_numpy

TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
         pa.uint64(), pa.float16(), pa.float32(), pa.float64()]


@settings(max_examples=60, deadline=None)
@given(t=st.sampled_from(TYPES), n=st.integers(0, 50), start=st.integers(0, 10),
       length=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_numeric_to_numpy_equals_pyarrow(t, n, start, length, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 100, n).astype(t.to_pandas_dtype())
    arr = pa.array(raw, type=t).slice(min(start, n), length)  # offsets into the buffer
    got = numeric_to_numpy(arr)
    want = arr.to_numpy(zero_copy_only=False)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 20), width=st.integers(1, 8), start=st.integers(0, 5),
       seed=st.integers(0, 2**16))
def test_token_columns_round_trip_through_slices(rows, width, start, seed):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, 60000, (rows, width)).astype(np.uint16)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(toks.ravel()), width)
    start = min(start, rows - 1)
    assert np.array_equal(column_from_arrow(fixed.slice(start)), toks[start:])
    lists = pa.array([list(r[: 1 + i % width]) for i, r in enumerate(toks)], pa.list_(pa.uint16()))
    ragged = column_from_arrow(lists.slice(start))
    for i, r in enumerate(toks[start:]):
        k = 1 + (i + start) % width
        assert np.array_equal(ragged.values[ragged.offsets[i]:ragged.offsets[i + 1]], r[:k])


def test_reading_a_shard_does_not_import_pandas(tmp_path):
    code = f"""
import sys, numpy as np, pyarrow as pa
from mixstream.shards.writer import write_shards
from mixstream import MixStream, MixLoader
t = pa.table({{"input_ids": pa.FixedSizeListArray.from_arrays(
    pa.array(np.arange(64 * 8, dtype=np.uint16)), 8)}})
write_shards(t, {str(tmp_path / 'a')!r}, domain="a")
sys.modules.pop("pandas", None)
before = "pandas" in sys.modules
batch = next(iter(MixLoader(MixStream({{"a": {str(tmp_path / 'a')!r}}}), batch_size=4)))
print(before, "pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
