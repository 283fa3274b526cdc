"""BatchRing: shared-memory batch slots written by workers and copied out by the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.ring import BatchRing, RingRef, ring_layout
from mixstream.sources.base import ColumnSpec

SCHEMA = {"input_ids": ColumnSpec("fixed", "uint16", 5), "loss_mask": ColumnSpec("fixed", "bool", 5),
          "score": ColumnSpec("scalar", "float32")}


def batch(bsz: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": torch.from_numpy(rng.integers(0, 60_000, (bsz, 5)).astype(np.int64)),
            "loss_mask": torch.from_numpy(rng.random((bsz, 5)) > 0.5),
            "score": torch.from_numpy(rng.random(bsz).astype(np.float32)),
            "domain": torch.from_numpy(rng.integers(0, 3, bsz)),
            "index": torch.arange(seed * bsz, (seed + 1) * bsz)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])
                                        for k in a)


def test_layout_widens_token_ids_aligns_and_never_overlaps():
    fields = ring_layout(SCHEMA, 3, "int64")
    assert fields is not None
    names = [f[0] for f in fields]
    assert names == ["input_ids", "loss_mask", "score", "domain", "index"]
    dt = {f[0]: np.dtype(f[1]) for f in fields}
    assert dt["input_ids"] == np.int64  # as assemble() writes it: uint16 widened
    assert dt["loss_mask"] == np.bool_ and dt["score"] == np.float32
    end = 0
    for _, d, shape, off in fields:
        assert off % 8 == 0 and off >= end  # 8-byte aligned, after the previous field
        end = off + int(np.prod(shape)) * np.dtype(d).itemsize
    kept = ring_layout(SCHEMA, 3, None)
    assert kept is not None and np.dtype(kept[0][1]) == np.uint16  # token_dtype=None keeps it


@pytest.mark.parametrize("spec", [ColumnSpec("ragged", "int32"), ColumnSpec("object", "str"),
                                  ColumnSpec("fixed", "int32", None)])
def test_no_fixed_size_no_ring(spec):
    assert ring_layout({**SCHEMA, "x": spec}, 4, "int64") is None


@settings(max_examples=20, deadline=None)
@given(bsz=st.integers(1, 8), slots=st.integers(1, 4), seeds=st.lists(st.integers(0, 10**6),
                                                                      min_size=1, max_size=12))
def test_put_take_round_trip_and_slot_reuse(bsz, slots, seeds):
    ring = BatchRing(ring_layout(SCHEMA, bsz, "int64"), slots)
    for t, seed in enumerate(seeds):
        b = batch(bsz, seed)
        ref = ring.put(t, b)
        assert ref == RingRef(t)
        got = ring.take(ref)
        assert same(got, b)
        ring.put(t + slots, batch(bsz, seed + 1))  # the slot is reused by batch t + slots ...
        assert same(got, b)  # ... but what was taken is a copy
        assert same(ring.take(RingRef(t)), batch(bsz, seed + 1))  # t and t + slots share it


def _worker(ring: BatchRing, t: int, seed: int) -> None:
    ring.put(t, batch(4, seed))


def test_a_forked_worker_writes_the_trainer_reads():
    ring = BatchRing(ring_layout(SCHEMA, 4, "int64"), 3)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(ring, t, 100 + t)) for t in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for t in range(3):
        assert same(ring.take(RingRef(t)), batch(4, 100 + t))


def test_a_pickled_ring_shares_the_slots():
    """Workers under spawn get the ring pickled by multiprocessing (torch's reducers share the
    tensor's memory): the copy must map the same slots, not carry a cached numpy view."""
    from multiprocessing.reduction import ForkingPickler

    ring = BatchRing(ring_layout(SCHEMA, 2, "int64"), 2)
    ring.take(RingRef(0))  # caches a numpy view in this process (not pickled)
    copy = ForkingPickler.loads(bytes(ForkingPickler.dumps(ring)))
    assert "_np" not in copy.__dict__
    copy.put(1, batch(2, 7))
    assert same(ring.take(RingRef(1)), batch(2, 7))
