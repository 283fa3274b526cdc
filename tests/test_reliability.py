"""Exactly once, wherever it runs: the user paths that broke (one test per reported failure).

Each test here failed on the code before the claim-book epoch rule, the pending-tail channel,
late topology, the minimal worker payload and the checked checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from mixstream import MixLoader, MixStream

W3 = {"a": 0.5, "b": 0.3, "c": 0.2}


def parquet_domains(root, n=6000, files=3, row_group=500, names=("a", "b", "c")) -> dict:
    """The issue's corpus: domains of ``n`` rows in ``files`` Parquet files, row groups of 500."""
    out = {}
    for d, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        per = n // files
        for f in range(files):
            ids = np.arange(f * per, (f + 1) * per, dtype=np.int64) + d * 1_000_000
            tok = (ids[:, None] + np.arange(8)) % 50_000
            table = pa.table({"id": ids, "input_ids": pa.FixedSizeListArray.from_arrays(
                pa.array(tok.ravel().astype(np.uint16)), 8)})
            pq.write_table(table, folder / f"part-{f}.parquet", row_group_size=row_group)
        out[name] = str(folder)
    return out


def epoch_ok(ids: np.ndarray, dom: np.ndarray, sizes: dict[int, int]) -> None:
    for d, n in sizes.items():
        mine = ids[dom == d]
        for e in range(0, len(mine), n):
            chunk = mine[e : e + n]
            assert len(np.unique(chunk)) == len(chunk), f"domain {d}: repeat in epoch {e // n}"


@pytest.mark.parametrize("shuffle", [True, False])
def test_domains_smaller_than_the_window_are_not_duplicated(tmp_path, shuffle):
    """Issue item 1: 55-84 of 1,920 samples twice (960 with shuffle=False) with 2 workers."""
    paths = parquet_domains(tmp_path)
    stream = MixStream(paths, weights=W3, seed=0, shuffle=shuffle)  # default window 8192 > 6000
    loader = MixLoader(stream, batch_size=16, num_workers=2)
    ids, dom, idx = [], [], []
    for step, batch in enumerate(loader):
        ids.append(batch["id"].numpy())
        dom.append(batch["domain"].numpy())
        idx.append(batch["index"].numpy())
        if step + 1 == 120:
            break
    ids_a = np.concatenate(ids)
    assert len(np.unique(ids_a)) == len(ids_a) == 1920
    assert (np.concatenate(idx) == np.arange(1920)).all()


def test_ranks_never_share_a_sample_of_a_single_file_domain(tmp_path):
    """Issue item 1 (ranks): both ranks yielded rows 0, 1, 2 ... of every domain."""
    root = tmp_path / "one"
    paths = parquet_domains(root, n=400, files=1, row_group=400, names=("a", "b"))
    seen = []
    for rank in range(2):
        s = MixStream(paths, seed=0, shuffle=False, rank=rank, world_size=2)
        for step, batch in enumerate(MixLoader(s, batch_size=8, num_workers=1)):
            seen.append(batch["id"].numpy())
            if step + 1 == 20:
                break
    ids = np.concatenate(seen)
    assert len(np.unique(ids)) == len(ids) == 320


def test_topology_comes_from_the_environment_when_no_group_exists(tmp_path, monkeypatch):
    """Issue item 2: under torchrun a stream built before init_process_group read rank 0 of 1."""
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    stream = MixStream(paths, seed=0)
    batch = next(iter(MixLoader(stream, batch_size=4)))
    assert (stream.rank, stream.world_size) == (1, 2)
    assert batch["index"].tolist() == [4, 5, 6, 7]  # rank 1's first batch


def test_a_topology_change_after_consuming_is_refused(tmp_path, monkeypatch):
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=4)
    it = iter(loader)
    next(it)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"bound as rank 0 of 1 but now runs as rank 1 of 2"):
        iter(loader)


def test_a_topology_change_before_consuming_rebinds(tmp_path, monkeypatch):
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=4)  # bound as 0 of 1 (like HF before TrainingArguments)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    batch = next(iter(loader))
    assert batch["index"].tolist() == [4, 5, 6, 7]


class _Heavy:
    """An attached object a worker must never receive: a closure and a large tensor."""

    def __init__(self):
        self.fn = lambda x: x + 1
        self.big = torch.zeros(4_000_000)

    def state_dict(self):
        return {"n": 1}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_workers_get_a_minimal_payload(tmp_path, context):
    """Issue item 3: everything attached was pickled into spawn/forkserver workers."""
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    stream = MixStream(paths, seed=0)
    stream.attach(_Heavy())
    loader = MixLoader(stream, batch_size=4, num_workers=2, multiprocessing_context=context)
    payload = len(pickle.dumps(stream))
    assert payload < 20_000, payload  # the attached 16 MB tensor is not in it
    rows = [b["index"].tolist() for _, b in zip(range(4), loader)]
    assert rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    copy = pickle.loads(pickle.dumps(stream))  # what a worker sees: settings and topology
    assert (copy.domains, copy.batch_size, copy.num_workers, copy.rank, copy.world_size,
            copy.seed) == (["a", "b"], 4, 2, 0, 1, 0)


def _plain_loop(paths, workers, changes, steps=30):
    stream = MixStream(paths, seed=2, shuffle_window=100)
    loader = DataLoader(stream, batch_size=8, num_workers=workers)
    stream.bind_loader(loader)
    out = []
    for step, batch in enumerate(loader):
        out.append((batch["index"].tolist(), batch["domain"].tolist(), batch["id"].tolist()))
        stream.consumed_batches = step + 1
        if step in changes:
            stream.set_weights(changes[step])
        if step + 1 == steps:
            break
    return out, stream


def test_plain_dataloader_recipe_with_weight_changes(tmp_path):
    """Issue item 4: the README recipe crashed with LateWeightChangeError a few steps later."""
    paths = parquet_domains(tmp_path, n=1200, files=2, row_group=100)
    changes = {3: {"a": 0.0, "b": 0.5, "c": 0.5}, 4: {"a": 0.2, "b": 0.2, "c": 0.6},
               12: {"a": 1.0, "b": 0.0, "c": 0.0}}
    a, stream = _plain_loop(paths, 2, changes)
    b, _ = _plain_loop(paths, 2, changes)
    assert a == b and len(a) == 30
    ids = np.concatenate([np.array(x[2]) for x in a])
    assert len(np.unique(ids)) == len(ids)
    assert [f for f, _ in stream.weight_log][-3:] == [(3 + 1 + 4) * 8, (4 + 1 + 4) * 8,
                                                      (12 + 1 + 4) * 8]


def test_set_weights_from_another_thread_is_safe(tmp_path):
    """Issue item 5: a second thread calling set_weights crashed 4/4 runs, with samples off the
    weight log. Now any thread may call it; every batch follows the (full) weight log."""
    paths = parquet_domains(tmp_path, n=3000, files=2, row_group=100)
    stream = MixStream(paths, seed=1, shuffle_window=200)
    log: list = [(0, dict(zip("abc", [1 / 3] * 3)))]
    stream.add_weight_listener(lambda f, w: log.append((f, w)))
    loader = MixLoader(stream, batch_size=8, num_workers=2)
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def tweak():
        while not stop.is_set():
            w = rng.random(3) + 0.01
            stream.set_weights(dict(zip("abc", w.tolist())))
            time.sleep(0.0005)

    thread = threading.Thread(target=tweak)
    thread.start()
    dom = []
    try:
        for step, batch in enumerate(loader):
            dom.append(batch["domain"].numpy())
            if step + 1 == 150:
                break
    finally:
        stop.set()
        thread.join()
    assert len(log) > 20
    from mixstream.plan.mixture import MixCheckpoint, MixCursor

    cur = MixCursor(1, 1024, MixCheckpoint.initial(np.array(list(log[0][1].values()))))
    for f, w in log[1:]:
        cur.add_entry(f, np.array(list(w.values())))
    got = np.concatenate(dom)
    assert (got == cur.domains(0, len(got))).all()


def test_plain_dataloader_refuses_set_weights_from_another_thread(tmp_path):
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    stream = MixStream(paths, seed=0)
    stream.bind_loader(DataLoader(stream, batch_size=4))
    err: list = []
    t = threading.Thread(target=lambda: err.append(_catch(stream.set_weights, {"a": 1, "b": 0})))
    t.start()
    t.join()
    assert isinstance(err[0], RuntimeError) and "another thread" in str(err[0])


def _catch(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        return e
    return None


# -- checkpoints (item 7) ---------------------------------------------------------------------
def test_checkpoint_loads_with_weights_only(tmp_path):
    from mixstream.controllers import ODM
    from mixstream.observe import MixLogger

    paths = parquet_domains(tmp_path, n=900, files=1, row_group=100)
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=4)
    odm = ODM(stream, observer=MixLogger(str(tmp_path / "run.jsonl")))
    for step, batch in enumerate(loader):
        odm.feedback(batch["domain"], torch.rand(4))
        if step == 20:
            break
    buf = io.BytesIO()
    torch.save(loader.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert json.loads(json.dumps(state)) == state


def test_rewound_counter_is_refused(tmp_path):
    """Issue item 7: a rewound counter loaded silently and gave 72 duplicates."""
    paths = parquet_domains(tmp_path, n=900, files=1, row_group=100)
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=8)
    for step, _ in enumerate(loader):
        if step == 9:
            break
    state = loader.state_dict()
    state["consumed_batches"] = 5
    fresh = MixStream(paths, seed=0)
    MixLoader(fresh, batch_size=8)
    with pytest.raises(ValueError, match=r"inconsistent.*rewound"):
        fresh.load_state_dict(state)


@pytest.mark.parametrize("key, value, match", [
    ("weight_log", [[0, [1.0]]], r"weight_log\[0\]"),
    ("claims", {"claimed": [1, 2]}, r"claims"),
    ("mix", {"chunk_start": "x"}, r"mix"),
    ("consumed_batches", -3, r"consumed_batches"),
    ("attached", [], r"attached"),
    ("segments", None, r"segments"),
    ("segments", [[[0, 1]]] * 3, r"segments\[0\]"),
])
def test_malformed_checkpoints_name_the_key(tmp_path, key, value, match):
    paths = parquet_domains(tmp_path, n=300, files=1, names=("a", "b", "c"))
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=4)
    next(iter(loader))
    state = loader.state_dict()
    state[key] = value
    with pytest.raises(ValueError, match=match):
        MixStream(paths, seed=0).load_state_dict(state)


def test_checkpoint_stays_bounded_with_a_change_every_step(tmp_path):
    """Issue item 7: the whole weight log went into every checkpoint (~1.4 GB after 1M changes)."""
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=2, num_workers=0)
    full: list = []
    stream.add_weight_listener(lambda f, w: full.append(f))
    rng = np.random.default_rng(0)
    sizes = []
    for step, _ in enumerate(loader):
        stream.set_weights({"a": float(rng.random()) + 0.1, "b": 1.0})
        if step % 500 == 499:
            sizes.append(len(json.dumps(loader.state_dict())))
        if step + 1 == 2000:
            break
    assert len(full) == 2000
    assert max(sizes) < 2 * min(sizes) < 20_000
    assert len(stream.weight_log) <= 4 * stream._plan.channel.capacity + 1


def test_persistent_workers_refuse_a_checkpoint_of_another_topology(tmp_path):
    """Issue item 7: live persistent workers kept the old start buffer and served a stale start."""
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    other = MixStream(paths, seed=0)
    oloader = MixLoader(other, batch_size=4, num_workers=2)
    for step, _ in enumerate(oloader):
        if step == 5:
            break
    state = oloader.state_dict()
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=4, num_workers=1, persistent_workers=True)
    next(iter(loader))
    with pytest.raises(RuntimeError, match=r"persistent DataLoader workers"):
        loader.load_state_dict(state)


# -- corners (item 8) -------------------------------------------------------------------------
def test_out_of_order_delivery_is_refused(tmp_path):
    paths = parquet_domains(tmp_path, n=300, files=1, names=("a", "b"))
    with pytest.raises(ValueError, match=r"in_order=True"):
        MixLoader(MixStream(paths), batch_size=4, num_workers=2, in_order=False)


def test_huge_weights_are_normalised_not_a_worker_crash(tmp_path):
    paths = parquet_domains(tmp_path, n=300, files=1, names=("a", "b"))
    stream = MixStream(paths, weights={"a": 1e308, "b": 1e308})
    assert stream.weights == {"a": 0.5, "b": 0.5}
    loader = MixLoader(stream, batch_size=4, num_workers=1)
    assert len([b for _, b in zip(range(3), loader)]) == 3


def test_many_changes_in_one_step_do_not_end_the_run(tmp_path):
    """Issue item 8: more changes than the ring held between two worker reads ended the run."""
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    stream = MixStream(paths, seed=0)
    loader = MixLoader(stream, batch_size=4, num_workers=2)
    rng = np.random.default_rng(0)
    for step, _ in enumerate(loader):
        for _ in range(2500):
            stream.set_weights({"a": float(rng.random()), "b": 1.0})
        if step == 10:
            break


def test_too_many_changes_scheduled_ahead_is_a_clear_error(tmp_path):
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    stream = MixStream(paths, seed=0, max_pending_weight_changes=8)
    MixLoader(stream, batch_size=4)
    accepted = 0
    with pytest.raises(ValueError, match=r"max_pending_weight_changes"):
        for b in range(1, 20):
            stream.set_weights({"a": 1.0, "b": float(b)}, from_batch=b)
            accepted = b
    assert accepted == 8  # exactly the capacity
    assert stream.weight_log[-1][0] == accepted * 4  # the refused change left no trace


def test_iterating_a_stream_without_a_loader_yields_samples(tmp_path):
    paths = parquet_domains(tmp_path, n=300, files=1, names=("a", "b"))
    stream = MixStream(paths, seed=0, batch_size=8)
    sample = next(iter(stream))
    assert sample["input_ids"].shape == (8,) and isinstance(sample["domain"], int)
    batch = next(iter(DataLoader(stream, batch_size=8)))  # never 8 batches of 8
    assert batch["input_ids"].shape == (8, 8) and batch["input_ids"].dtype == torch.int64


def test_a_mixloader_stream_iterated_by_another_dataloader_is_refused(tmp_path):
    """Issue #13: accelerate's skip_first_batches wrapped the stream in a new DataLoader."""
    paths = parquet_domains(tmp_path, n=300, files=1, names=("a", "b"))
    stream = MixStream(paths, seed=0)
    MixLoader(stream, batch_size=4)
    with pytest.raises(RuntimeError, match=r"iterated by another DataLoader"):
        next(iter(DataLoader(stream, batch_size=None)))


def test_trained_batches_sets_the_checkpoint_position(tmp_path):
    """A trainer that fetches one batch ahead checkpoints what it trained on (Lightning)."""
    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))

    def make():
        s = MixStream(paths, seed=3)
        return s, MixLoader(s, batch_size=4, num_workers=2)

    s, loader = make()
    it = iter(loader)
    rows = [next(it)["index"].tolist() for _ in range(11)]  # fetched 11, trained 10
    loader.trained_batches = 10
    state = loader.state_dict()
    assert state["consumed_batches"] == 10
    s2, loader2 = make()
    loader2.load_state_dict(state)
    assert next(iter(loader2))["index"].tolist() == rows[10]
    os.environ.pop("RANK", None)


def test_stop_mode_ends_every_rank_after_the_same_batch(tmp_path):
    """Issue item 8: ranks ended after 56/56/56/55 batches (a DDP hang) and global batches were
    never delivered. Now the stream ends before the first round that needs a sample beyond a
    domain's first epoch, on every rank."""
    paths = parquet_domains(tmp_path, n=450, files=1, row_group=90)
    counts, index = [], []
    for rank in range(4):
        s = MixStream(paths, weights=W3, seed=5, shuffle_window=64, on_exhausted="stop",
                      rank=rank, world_size=4)
        rows = [b["index"].numpy() for b in MixLoader(s, batch_size=5, num_workers=2)]
        counts.append(len(rows))
        index.extend(rows)
    assert len(set(counts)) == 1 and counts[0] > 0
    assert (np.sort(np.concatenate(index)) == np.arange(counts[0] * 20)).all()


def _one_rank_changes(rank: int, world: int, port: int, paths: dict, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        stream = MixStream(paths, seed=0)
        loader = MixLoader(stream, batch_size=4)
        for step, _ in enumerate(loader):
            if step == 3 and rank == 0:
                stream.set_weights({"a": 1.0, "b": 0.0})  # on one rank only: a user bug
            if step == 6:
                break
        try:
            loader.state_dict()
            result = "no error"
        except RuntimeError as e:
            result = str(e)
        with open(f"{out}.{rank}", "w") as f:
            f.write(result)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_a_weight_change_on_one_rank_only_is_detected(tmp_path):
    """Issue item 8: set_weights on rank 0 only repeated 40 samples with no error."""
    import torch.multiprocessing as mp
    from dist_helpers import free_port

    paths = parquet_domains(tmp_path, n=600, files=1, names=("a", "b"))
    out = str(tmp_path / "result")
    mp.start_processes(_one_rank_changes, args=(2, free_port(), paths, out), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        assert "ranks disagree" in open(f"{out}.{rank}").read()


def test_a_checkpoint_loaded_before_the_group_exists_is_reapplied_under_the_true_rank(
        tmp_path, monkeypatch):
    """Lightning's DDP children have WORLD_SIZE but no RANK until the group starts: a checkpoint
    loaded then was installed as rank 0 and refused at iteration ('after 4 batches')."""
    paths = parquet_domains(tmp_path, n=900, files=1, row_group=100)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    ref = []
    for rank in range(2):
        s = MixStream(paths, seed=0, rank=rank, world_size=2)
        ref.append([b["id"].tolist() for _, b in zip(range(8), MixLoader(s, batch_size=4))])
        if rank == 0:
            s0 = MixStream(paths, seed=0, rank=0, world_size=2)
            it = iter(MixLoader(s0, batch_size=4))
            for _ in range(4):
                next(it)
            state = s0.state_dict(check_ranks=False)
    stream = MixStream(paths, seed=0)  # reads rank 0 of 2 now (no RANK yet)
    loader = MixLoader(stream, batch_size=4)
    loader.load_state_dict(state)
    monkeypatch.setenv("RANK", "1")  # the process group / launcher tells the truth later
    got = [b["id"].tolist() for _, b in zip(range(4), loader)]
    assert got == ref[1][4:]


def test_package_is_typed_and_clis_report_their_version():
    import subprocess
    import sys
    from pathlib import Path

    import mixstream

    assert (Path(mixstream.__file__).parent / "py.typed").exists()
    for mod in ("mixstream.cli.main", "mixstream.cli.shard"):  # as `python -m`, like the CLIs
        out = subprocess.run([sys.executable, "-m", mod, "--version"], capture_output=True,
                             text=True)
        assert mixstream.__version__ in out.stdout, out.stderr
