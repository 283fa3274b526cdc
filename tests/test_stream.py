"""MixStream behaviour: tagging, no lost/duplicated samples, live weights, zero weights, stop."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from conftest import SIZES, domain_of

from mixstream import MixLoader, MixStream
from mixstream.sources.base import Source
from mixstream.sources.native import NativeSource

W = {"a": 0.5, "b": 0.3, "c": 0.2}


def collect(loader, n):
    out = []
    for i, batch in enumerate(loader):
        out.append(batch)
        if i + 1 == n:
            break
    return out


def test_batches_are_tagged_and_typed(corpus):
    stream = MixStream(corpus["native"], weights=W, seed=1)
    batch = next(iter(MixLoader(stream, batch_size=32)))
    assert batch["input_ids"].shape == (32, 16) and batch["input_ids"].dtype == torch.int64
    assert batch["domain"].dtype == torch.int64 and batch["domain"].shape == (32,)
    assert (domain_of(batch["id"].numpy()) == batch["domain"].numpy()).all()
    assert batch["index"].tolist() == list(range(32))
    # token rows really come from the sample named by id
    ids = batch["id"].numpy()
    expect = (ids[:, None] * 7 + np.arange(16)[None, :]) % 60_000
    assert (batch["input_ids"].numpy() == expect).all()


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_no_sample_lost_or_repeated_within_an_epoch(corpus, workers):
    """Readers claim whole windows, one ahead, so when any reader starts epoch e + 1 of a domain,
    at most 2R - 1 windows of epoch e are still unserved (R readers, window W). Hence the first
    n - (2R-1)W samples of a domain are distinct, and every sample appears in the first
    n + (2R-1)W."""
    window = 64
    readers = max(1, workers)
    stream = MixStream(corpus["native"], weights={k: v / 1500 for k, v in SIZES.items()},
                       seed=2, shuffle_window=window)
    batches = collect(MixLoader(stream, batch_size=10, num_workers=workers), 300)
    ids = np.concatenate([b["id"].numpy() for b in batches])
    dom = np.concatenate([b["domain"].numpy() for b in batches])
    slack = (2 * readers - 1) * window if readers > 1 else 0
    for d, (name, n) in enumerate(SIZES.items()):
        got = ids[dom == d]
        first = got[: max(0, n - slack)]
        assert len(np.unique(first)) == len(first), f"{name}: repeat within an epoch"
        assert len(np.unique(got[: n + slack])) == n, f"{name}: sample missing from epoch 0"
        if workers == 0:
            assert sorted(got[:n]) == sorted(got[n : 2 * n])
    assert sorted(np.concatenate([b["index"].numpy() for b in batches])) == list(range(3000))


def test_second_epoch_is_reshuffled_and_reported(corpus):
    stream = MixStream(corpus["native"], weights={"a": 0, "b": 0, "c": 1}, seed=2,
                       shuffle_window=64)
    loader = MixLoader(stream, batch_size=50)
    batches = collect(loader, 12)
    ids = np.concatenate([b["id"].numpy() for b in batches])
    first, second = ids[:300], ids[300:600]
    assert sorted(first) == sorted(second) and not (first == second).all()
    progress = stream.progress()["c"]
    assert progress["samples"] == 600 and progress["epochs"] == 2.0


def window_error(domains: np.ndarray, weights: np.ndarray, window: int) -> float:
    onehot = np.eye(len(weights))[domains]
    csum = np.vstack([np.zeros(len(weights)), np.cumsum(onehot, 0)])
    counts = csum[window:] - csum[:-window]
    return float(np.abs(counts - weights * window).max())


@pytest.mark.parametrize("workers", [0, 2])
def test_global_mixture_tracks_weights_tightly(corpus, workers):
    stream = MixStream(corpus["native"], weights=W, seed=5)
    batches = collect(MixLoader(stream, batch_size=16, num_workers=workers), 125)
    dom = np.concatenate([b["domain"].numpy() for b in batches])
    w = np.array(list(W.values()))
    for window in (10, 100, 1000, 2000):
        # stated bound: |count - w * window| < 2 * (1 + D / 4) for every window
        assert window_error(dom, w, window) < 2 * (1 + 3 / 4)


def run_with_changes(paths, workers, sleep_seed=None, steps=40, **loader_kw):
    stream = MixStream(paths, weights=W, seed=11, shuffle_window=50)
    loader = MixLoader(stream, batch_size=8, num_workers=workers, **loader_kw)
    rnd = random.Random(sleep_seed)
    out, applied = [], {}
    for step, batch in enumerate(loader):
        out.append((batch["index"].tolist(), batch["id"].tolist()))
        if sleep_seed is not None:
            time.sleep(rnd.random() * 0.01)
        if step == 5:
            applied[5] = stream.set_weights({"a": 0.0, "b": 0.0, "c": 1.0})
        if step == 17:
            applied[17] = stream.set_weights({"a": 1.0, "b": 0.0, "c": 0.0})
        if step + 1 == steps:
            break
    return out, applied


def test_weight_change_reaches_workers_deterministically(corpus):
    ref, applied = run_with_changes(corpus["native"], 2, sleep_seed=None)
    for seed in (1, 2):
        again, _ = run_with_changes(corpus["native"], 2, sleep_seed=seed)
        assert again == ref
    # applied from the first batch not yet requested: consumed (6) + prefetch depth (2 x 2)
    assert applied[5] == (6 + 4) * 8
    ids = np.array([x[1] for x in ref]).ravel()
    idx = np.array([x[0] for x in ref]).ravel()
    dom = domain_of(ids)
    assert (dom[(idx >= applied[5]) & (idx < applied[17])] == 2).all()
    assert (dom[idx >= applied[17]] == 0).all()
    assert len(set(dom[idx < applied[5]])) == 3


def test_spawn_start_method(corpus):
    ref, _ = run_with_changes(corpus["native"], 2, steps=24)
    spawned, _ = run_with_changes(corpus["native"], 2, steps=24,
                                  multiprocessing_context="spawn")
    assert spawned == ref


def test_persistent_workers_see_changes_between_iterations(corpus):
    stream = MixStream(corpus["native"], weights=W, seed=1)
    loader = MixLoader(stream, batch_size=8, num_workers=2, persistent_workers=True)
    first = collect(loader, 3)
    stream.set_weights({"a": 0, "b": 1, "c": 0})
    # a new iteration continues the stream at batch 3; the change applies from batch 3 + 4
    second = collect(loader, 10)
    assert [b["index"][0].item() for b in first + second] == [8 * i for i in range(13)]
    dom = torch.cat([b["domain"] for b in second[4:]])
    assert (dom == 1).all()


class CountingSource(Source):
    """Wraps a source and counts block reads (shared through a file for worker processes)."""

    def __init__(self, inner: NativeSource, log: str):
        self.inner, self.uri, self.log = inner, inner.uri, log

    @property
    def block_sizes(self):
        return self.inner.block_sizes

    @property
    def schema(self):
        return self.inner.schema

    def read_block(self, index):
        with open(self.log, "a") as f:
            f.write(f"{index}\n")
        return self.inner.read_block(index)


def test_zero_weight_domain_is_never_read(corpus, tmp_path):
    log = tmp_path / "reads"
    paths = dict(corpus["native"])
    paths["b"] = CountingSource(NativeSource(paths["b"]), str(log))
    stream = MixStream(paths, weights={"a": 0.5, "b": 0.0, "c": 0.5}, seed=0)
    batches = collect(MixLoader(stream, batch_size=16, num_workers=2), 20)
    assert not log.exists()
    assert 1 not in torch.cat([b["domain"] for b in batches]).tolist()


def test_stop_mode_ends_after_first_epoch(corpus):
    stream = MixStream(corpus["native"], weights={"a": 0, "b": 1, "c": 0}, seed=0,
                       on_exhausted="stop")
    batches = list(MixLoader(stream, batch_size=32))
    ids = torch.cat([b["id"] for b in batches]).numpy()
    assert len(ids) == 15 * 32 and len(np.unique(ids)) == len(ids)  # 500 // 32 full batches


def test_per_sample_mode_default_collate(corpus):
    stream = MixStream(corpus["native"], weights=W, seed=1)
    batched = next(iter(MixLoader(stream, batch_size=8)))
    stream2 = MixStream(corpus["native"], weights=W, seed=1)
    per_sample = next(iter(MixLoader(stream2, batch_size=8, batched=False)))
    for key in ("input_ids", "domain", "index", "id"):
        assert torch.equal(batched[key], per_sample[key])


def test_plain_dataloader_with_explicit_binding(corpus):
    stream = MixStream(corpus["native"], weights=W, seed=1, batch_size=8)
    loader = torch.utils.data.DataLoader(stream, batch_size=8, num_workers=2)
    stream.bind_loader(loader)
    ref = collect(MixLoader(MixStream(corpus["native"], weights=W, seed=1), batch_size=8,
                            num_workers=2, batched=False), 6)
    got = collect(loader, 3)
    stream.consumed_batches = 3  # the documented alternative to MixLoader's counting
    state = stream.state_dict()
    assert state["consumed_batches"] == 3
    got += collect(loader, 3)  # a new iterator continues at batch 3
    assert [b["id"].tolist() for b in got] == [b["id"].tolist() for b in ref]


def test_ragged_and_text_columns(tmp_path):
    import datasets

    rng = np.random.default_rng(0)
    paths = {}
    for i, name in enumerate(["x", "y"]):
        rows = [{"tokens": rng.integers(0, 100, rng.integers(1, 9)).tolist(),
                 "text": f"{name}-{j}", "id": i * 1_000_000 + j} for j in range(50)]
        paths[name] = datasets.Dataset.from_list(rows)
    stream = MixStream(paths, seed=0)
    batch = next(iter(MixLoader(stream, batch_size=6)))
    assert isinstance(batch["tokens"], list) and len(batch["tokens"]) == 6
    for t, text, i in zip(batch["tokens"], batch["text"], batch["id"].tolist()):
        name = "xy"[i // 1_000_000]
        assert text == f"{name}-{i % 1_000_000}" and t.ndim == 1
        assert t.tolist() == paths[name][i % 1_000_000]["tokens"]
