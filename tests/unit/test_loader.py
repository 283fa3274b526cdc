"""MixLoader: batches fetched vs trained, the stateful-loader protocol, argument checks."""

from __future__ import annotations

import pytest
import torch

from mixstream import MixLoader, MixStream


def stream(paths: dict[str, str], **kw) -> MixStream:
    return MixStream(paths, weights=[0.5, 0.3, 0.2], seed=2, shuffle_window=24, mix_block=16, **kw)


def ids(batch: dict) -> list[int]:
    return batch["id"].tolist()


@pytest.mark.parametrize("workers", [0, 2])
def test_fetched_batches_are_counted_not_the_prefetched_ones(tiny, workers):
    s = stream(tiny)
    loader = MixLoader(s, batch_size=4, num_workers=workers)
    it = iter(loader)
    for n in range(1, 8):
        next(it)
        assert s.consumed_batches == loader.trained_batches == n  # workers ran ahead; not counted
    assert s.prefetch_depth == (0 if workers == 0 else workers * 2)
    assert loader.state_dict()["consumed_batches"] == 7
    if workers:
        it._shutdown_workers()


def test_state_dict_sits_at_the_trained_batch_and_resumes_there(tiny):
    """A trainer that fetches ahead (Lightning) sets trained_batches: the checkpoint position is
    the trained batch, and a resumed loader delivers the fetched-but-untrained batch again."""
    s = stream(tiny)
    loader = MixLoader(s, batch_size=4)
    it = iter(loader)
    got = [ids(next(it)) for _ in range(6)]
    loader.trained_batches = 5  # batch 5 was fetched, not trained on
    assert s.consumed_batches == 6 and loader.trained_batches == 5
    state = loader.state_dict()
    assert state["consumed_batches"] == 5
    later = [ids(next(it)) for _ in range(3)]

    s2 = stream(tiny)
    loader2 = MixLoader(s2, batch_size=4)
    loader2.load_state_dict(state)
    it2 = iter(loader2)
    assert [ids(next(it2)) for _ in range(4)] == [got[5]] + later
    assert s2.consumed_batches == 9


@pytest.mark.parametrize("bad", [-1, 7])
def test_trained_batches_must_lie_between_the_checkpoint_and_the_fetched(tiny, bad):
    loader = MixLoader(stream(tiny), batch_size=4)
    it = iter(loader)
    for _ in range(6):
        next(it)
    with pytest.raises(ValueError, match=r"trained_batches=-?\d+ must be between"):
        loader.trained_batches = bad


def test_a_new_iteration_starts_at_the_trained_position(tiny):
    loader = MixLoader(stream(tiny), batch_size=4)
    it = iter(loader)
    first = [ids(next(it)) for _ in range(5)]
    loader.trained_batches = 3
    again = iter(loader)  # an epoch restart, say: continues from the trained batch
    assert [ids(next(again)) for _ in range(2)] == first[3:5]


def test_load_state_dict_before_iterating_and_json_state(tiny):
    import json

    a = MixLoader(stream(tiny), batch_size=4)
    it = iter(a)
    for _ in range(4):
        next(it)
    state = json.loads(json.dumps(a.state_dict()))
    ref = ids(next(it))
    b = MixLoader(stream(tiny), batch_size=4)
    b.load_state_dict(state)
    assert b.trained_batches == 4
    assert ids(next(iter(b))) == ref


def test_per_sample_mode_collates_like_a_dataloader(tiny):
    batched = MixLoader(stream(tiny), batch_size=4)
    samples = MixLoader(stream(tiny), batch_size=4, batched=False)
    a, b = next(iter(batched)), next(iter(samples))
    assert torch.equal(a["id"], b["id"]) and torch.equal(a["input_ids"], b["input_ids"])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"shuffle": True}, "does not take 'shuffle'"),
    ({"sampler": [0]}, "does not take 'sampler'"),
    ({"drop_last": True}, "does not take 'drop_last'"),
    ({"in_order": False}, "needs in_order=True"),
    ({"collate_fn": list, "batched": True}, "collate_fn needs per-sample mode"),
    ({"reader_threads": 2, "num_workers": 2}, "threads or worker processes, not both"),
    ({"reader_threads": -1}, "reader_threads=-1"),
])
def test_arguments_that_would_break_the_order_are_refused(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixLoader(stream(tiny), batch_size=4, **kwargs)


def test_only_a_mixstream():
    with pytest.raises(TypeError, match="MixLoader needs a MixStream, got list"):
        MixLoader([1, 2, 3], batch_size=2)  # type: ignore[arg-type]


def test_the_stream_cannot_be_rebatched_by_another_loader(tiny):
    s = stream(tiny)
    MixLoader(s, batch_size=4)
    with pytest.raises(RuntimeError, match="driven by a MixLoader"):
        next(iter(torch.utils.data.DataLoader(s, batch_size=None)))


@pytest.mark.parametrize("kw", [{}, {"num_workers": 2},
                                {"num_workers": 2, "persistent_workers": True},
                                {"reader_threads": 2}, {"reader_threads": 2, "free": True}],
                         ids=["main", "workers", "persistent", "threads-inline", "threads"])
def test_a_checkpoint_loaded_under_a_running_iteration_rolls_it_back(tiny, kw):
    """A rollback inside the loop (load a checkpoint, keep iterating): the running iterator
    continues after the checkpoint. It used to go on from where it was while the stream
    counted from the checkpoint: later checkpoints then repeated batches, silently."""
    from unittest import mock

    free = kw.pop("free", False)
    with mock.patch("mixstream.threads.gil_enabled", lambda: not free):
        s = stream(tiny)
        loader = MixLoader(s, batch_size=4, **kw)
        it = iter(loader)
        for _ in range(3):
            next(it)
        s.set_weights([0.2, 0.3, 0.5])
        state = loader.state_dict()
        after = [ids(next(it)) for _ in range(5)]
        loader.load_state_dict(state)
        assert [ids(next(it)) for _ in range(5)] == after
        assert s.consumed_batches == 8
        loader.load_state_dict(state)  # and a new iteration starts there too
        assert [ids(b) for _, b in zip(range(5), loader)] == after


@pytest.mark.parametrize("gil", [True, False])
def test_reader_threads_take_turns_under_the_gil_and_run_free_without(tiny, gil):
    """Under the GIL the slots take turns on the trainer's thread (N assembling threads only
    contend for it); a free-threaded build gets a thread per slot. Same batches either way."""
    from unittest import mock

    from mixstream.threads import InlineReaders, ThreadedReaders

    with mock.patch("mixstream.threads.gil_enabled", lambda: gil):
        s = stream(tiny)
        it = iter(MixLoader(s, batch_size=4, reader_threads=2))
        got = [ids(next(it)) for _ in range(6)]
        kind = type(s._session.readers)
    assert kind is (InlineReaders if gil else ThreadedReaders)
    assert got == [ids(b) for _, b in zip(range(6), MixLoader(stream(tiny), batch_size=4,
                                                               num_workers=2))]
