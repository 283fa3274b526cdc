"""DomainReader: decode the claimed window, prefetch the next, serve rows in the plan's order."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.plan.claims import ClaimBook
from mixstream.plan.order import WindowGeometry, window_permutation
from mixstream.reservoir import DomainExhausted, DomainReader


class FakeDomain:
    """Blocks of sample ids (``block * 100 + row``); records which thread read which block."""

    def __init__(self, sizes: list[int], name: str = "web"):
        self.name = name
        self.block_sizes = np.asarray(sizes, np.int64)
        self.reads: list[tuple[int, str]] = []
        self.prefetched: list[list[int]] = []

    def read_block(self, block: int) -> dict:
        self.reads.append((block, threading.current_thread().name))
        n = int(self.block_sizes[block])
        return {"id": np.arange(n, dtype=np.int64) + block * 100}

    def prefetch(self, blocks: list[int]) -> None:
        self.prefetched.append(list(blocks))


def reader(sizes, window=8, shuffle=True, epochs=None, executor=None):
    dom = FakeDomain(sizes)
    geo = WindowGeometry(np.array(sizes), window, seed=4, domain=0, shuffle=shuffle)
    return dom, geo, DomainReader(dom, 0, seed=4, geometry=geo, shuffle=shuffle, epochs=epochs,
                                  executor=executor)


def window_ids(geo: WindowGeometry, w: int, shuffle: bool = True) -> np.ndarray:
    """What the plan says window ``w`` holds, in served order: its spans, then its shuffle."""
    ids = np.concatenate([np.arange(s.start, s.stop) + s.block * 100 for s in geo.spans(w)])
    return ids[window_permutation(len(ids), 4, 0, w, shuffle)]


def served(out: list) -> list[int]:
    return [int(x) for data, rows in out for x in data["id"][rows]]


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=6), window=st.integers(1, 12),
       shuffle=st.booleans(), take=st.integers(1, 7))
def test_rows_served_follow_the_plan_and_cover_each_epoch(sizes, window, shuffle, take):
    dom, geo, r = reader(sizes, window, shuffle)
    book = ClaimBook([geo], 1)
    n = int(sum(sizes))
    got: list[int] = []
    want: list[int] = []
    while len(got) < 2 * n:
        pieces = book.serve(0, 0, take)
        got += served(r.take(pieces))
        want += [int(window_ids(geo, w, shuffle)[o + i]) for w, o, k in pieces for i in range(k)]
    assert got == want  # the k-th sample served is the plan's
    everything = sorted(int(b * 100 + i) for b, s in enumerate(sizes) for i in range(s))
    assert sorted(got[:n]) == everything and sorted(got[n : 2 * n]) == everything


def test_each_block_is_read_once_per_window():
    dom, geo, r = reader([8, 8, 8, 8], window=16)
    for w in range(geo.per_epoch):
        r.take([(w, 0, geo.size(w))])
    blocks = [b for b, _ in dom.reads]
    assert sorted(blocks) == [0, 1, 2, 3]  # one epoch, every block once
    assert dom.prefetched == [[s.block for s in geo.spans(w)] for w in range(geo.per_epoch)]


def test_a_block_larger_than_the_window_is_read_once_for_its_units():
    dom, geo, r = reader([30], window=8)  # one block cut into 4 units / windows
    for w in range(geo.per_epoch):
        r.take([(w, 0, geo.size(w))])
    assert [b for b, _ in dom.reads] == [0]  # the last block is kept between windows


def test_prefetch_decodes_the_next_window_in_the_background():
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as ex:
        dom, geo, r = reader([8] * 6, window=8, executor=ex)
        r.take([(0, 0, 2)])
        r.prefetch(1)
        r._pending[1].result()  # wait for the background decode
        before = len(dom.reads)
        out = r.take([(0, 2, 6), (1, 0, 3)])
        assert len(dom.reads) == before  # window 1 came from the prefetch ...
        assert dom.prefetched == [[s.block for s in geo.spans(w)] for w in (0, 1)]  # decoded once
        assert any(t.startswith("decode") for _, t in dom.reads)
        assert served(out) == list(window_ids(geo, 0)[2:8]) + list(window_ids(geo, 1)[:3])
        assert r.window_index == 1


def test_prefetch_is_a_no_op_when_it_would_waste_work():
    with ThreadPoolExecutor(1) as ex:
        dom, geo, r = reader([8] * 4, window=8, epochs=1, executor=ex)
        r.take([(0, 0, 1)])
        r.prefetch(-1)  # the slot has not reserved a next window
        r.prefetch(0)  # the current one
        r.prefetch(geo.per_epoch)  # beyond the last epoch in stop mode
        assert r._pending == {}
        r.prefetch(1)
        r.prefetch(1)
        assert list(r._pending) == [1]
    _, _, plain = reader([8] * 4, window=8)
    plain.prefetch(1)  # no executor: nothing in the background
    assert plain._pending == {}


def test_a_skipped_prefetch_is_cancelled_and_the_right_window_decoded():
    with ThreadPoolExecutor(1) as ex:
        dom, geo, r = reader([8] * 6, window=8, executor=ex)
        r.take([(0, 0, 8)])
        r.prefetch(1)
        out = r.take([(2, 0, 4)])  # the slot went elsewhere (a steal, a remap)
        assert served(out) == list(window_ids(geo, 2)[:4])
        assert r._pending == {}


def test_stop_mode_ends_at_the_first_epoch():
    dom, geo, r = reader([5, 5], window=5, epochs=1)
    r.take([(geo.per_epoch - 1, 0, 5)])
    with pytest.raises(DomainExhausted, match="web"):
        r.take([(geo.per_epoch, 0, 1)])


def test_release_drops_the_windows_and_they_are_decoded_again():
    dom, geo, r = reader([8, 8], window=8)
    first = served(r.take([(0, 0, 4)]))
    r.release()
    assert r.window_index == -1
    again = served(r.take([(0, 0, 4)]))
    assert first == again and len(dom.reads) == 2  # same rows, read again after the release
