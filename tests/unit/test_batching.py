"""Batch assembly: numpy gathers from window pieces, widened token ids, per-sample split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.batching import assemble, split_samples, widened_dtype
from mixstream.sources.base import ColumnSpec, Ragged

FIXED = {"id": ColumnSpec("scalar", "int64"), "input_ids": ColumnSpec("fixed", "uint16", 4)}


def window(domain: int, n: int) -> dict:
    """A decoded window of domain ``domain``: sample ids ``domain * 1000 + row``."""
    ids = np.arange(n, dtype=np.int64) + domain * 1000
    return {"id": ids, "input_ids": (ids[:, None] * 3 + np.arange(4)).astype(np.uint16)}


@pytest.mark.parametrize("stored", ["uint16", "uint32", "uint64"])
def test_unsigned_token_ids_are_widened(stored):
    assert widened_dtype(np.dtype(stored), "int64") == np.int64
    assert widened_dtype(np.dtype(stored), None) == np.dtype(stored)  # None keeps them


@pytest.mark.parametrize("stored", ["int32", "int16", "float32", "bool", "uint8"])
def test_other_dtypes_are_kept(stored):
    assert widened_dtype(np.dtype(stored), "int64") == np.dtype(stored)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), bsz=st.integers(1, 12), d=st.integers(1, 3))
def test_assemble_gathers_the_claimed_rows_into_their_positions(data, bsz, d):
    dom = np.asarray(data.draw(st.lists(st.integers(0, d - 1), min_size=bsz, max_size=bsz)))
    wins = [window(i, 20) for i in range(d)]
    order = np.argsort(dom, kind="stable")  # positions of each domain, as the reader groups them
    pieces, expected, start = [], np.zeros(bsz, np.int64), 0
    for i in np.unique(dom):
        n = int((dom == i).sum())
        positions = order[start : start + n]
        rows = np.asarray(data.draw(st.permutations(range(20))))[:n]
        cut = data.draw(st.integers(0, n))  # the rows may come from two windows (pieces)
        parts = [(wins[i], rows[:cut]), (window(i, 20), rows[cut:])]
        pieces.append((positions, [p for p in parts if len(p[1])] or parts[:1]))
        expected[positions] = i * 1000 + rows
        start += n
    index = np.arange(100, 100 + bsz)
    batch = assemble(FIXED, bsz, pieces, dom, index, uniform=True, token_dtype="int64")
    assert batch["id"].tolist() == expected.tolist()
    assert batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"].tolist() == ((expected[:, None] * 3 + np.arange(4)) % 65536).tolist()
    assert batch["domain"].tolist() == dom.tolist() and batch["index"].tolist() == index.tolist()


def test_uint16_kept_without_token_dtype():
    pieces = [(np.arange(3), [(window(0, 5), np.array([4, 0, 2]))])]
    batch = assemble(FIXED, 3, pieces, np.zeros(3, np.int64), np.arange(3), token_dtype=None)
    assert batch["input_ids"].dtype == torch.uint16
    assert batch["id"].tolist() == [4, 0, 2]


def ragged(domain: int, n: int) -> dict:
    lens = (np.arange(n) % 4) + 1
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    values = np.arange(offsets[-1], dtype=np.uint32) + domain * 1000
    return {"id": np.arange(n, dtype=np.int64) + domain * 1000,
            "tokens": Ragged(values, offsets), "text": [f"d{domain}r{r}" for r in range(n)]}


def test_ragged_and_object_columns_become_lists_in_position():
    schema = {"id": ColumnSpec("scalar", "int64"), "tokens": ColumnSpec("ragged", "uint32"),
              "text": ColumnSpec("object", "str")}
    w0, w1 = ragged(0, 6), ragged(1, 6)
    dom = np.array([1, 0, 1, 0])
    pieces = [(np.array([1, 3]), [(w0, np.array([5, 2]))]), (np.array([0, 2]), [(w1, np.array([0, 3]))])]
    batch = assemble(schema, 4, pieces, dom, np.arange(4), token_dtype="int64")
    assert batch["id"].tolist() == [1000, 5, 1003, 2]
    assert batch["text"] == ["d1r0", "d0r5", "d1r3", "d0r2"]
    want = [w1["tokens"].row(0), w0["tokens"].row(5), w1["tokens"].row(3), w0["tokens"].row(2)]
    assert [t.tolist() for t in batch["tokens"]] == [w.tolist() for w in want]
    assert all(t.dtype == torch.int64 for t in batch["tokens"])  # ragged token ids widened too


def test_per_sample_union_schema_fills_none_for_domains_without_a_column():
    schema = {**FIXED, "label": ColumnSpec("scalar", "int64")}
    labelled = {**window(1, 4), "label": np.array([7, 8, 9, 10])}
    pieces = [(np.array([0, 2]), [(window(0, 4), np.array([1, 3]))]),
              (np.array([1]), [(labelled, np.array([2]))])]
    batch = assemble(schema, 3, pieces, np.array([0, 1, 0]), np.arange(3), token_dtype="int64")
    assert isinstance(batch["label"], list)  # not every domain has it: a list with None
    assert batch["label"][0] is None and batch["label"][2] is None
    assert int(batch["label"][1]) == 9
    samples = list(split_samples(batch, 3))
    assert [s["id"].item() for s in samples] == [1, 1002, 3]
    assert "label" not in samples[0] and int(samples[1]["label"]) == 9  # None keys are left out
    assert [s["domain"] for s in samples] == [0, 1, 0]
    assert [s["index"] for s in samples] == [0, 1, 2]
    assert samples[1]["input_ids"].tolist() == ((1002 * 3 + np.arange(4)) % 65536).tolist()


@settings(max_examples=20, deadline=None)
@given(bsz=st.integers(1, 10))
def test_split_samples_rebuilds_the_batch(bsz):
    dom = np.arange(bsz) % 2
    order = np.argsort(dom, kind="stable")
    n0 = int((dom == 0).sum())
    pieces = [(order[:n0], [(window(0, 10), np.arange(n0))])]
    if bsz - n0:
        pieces.append((order[n0:], [(window(1, 10), np.arange(bsz - n0))]))
    batch = assemble(FIXED, bsz, pieces, dom, np.arange(bsz), uniform=True, token_dtype="int64")
    samples = list(split_samples(batch, bsz))
    assert len(samples) == bsz
    assert torch.equal(torch.stack([s["input_ids"] for s in samples]), batch["input_ids"])
    assert [s["domain"] for s in samples] == dom.tolist()
