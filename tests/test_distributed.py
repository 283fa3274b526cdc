"""A real multi-process gloo group: ranks never share a sample, the union follows the mixture."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from dist_helpers import free_port

from mixstream import MixLoader, MixStream
from mixstream.plan.mixture import MixCheckpoint, MixCursor

W0 = {"a": 0.5, "b": 0.3, "c": 0.2}
W1 = {"a": 0.0, "b": 0.5, "c": 0.5}
STEPS, BATCH, CHANGE_AT = 30, 8, 10


def _worker(rank: int, world: int, port: int, paths: dict, workers: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        stream = MixStream(paths, weights=W0, seed=4, shuffle_window=32)
        assert (stream.rank, stream.world_size) == (rank, world)
        loader = MixLoader(stream, batch_size=BATCH, num_workers=workers)
        rows = []
        for step, batch in enumerate(loader):
            rows.append([batch["index"].tolist(), batch["domain"].tolist(), batch["id"].tolist()])
            if step + 1 == CHANGE_AT:
                stream.set_weights(W1)  # every rank, same step, same weights
            if step + 1 == STEPS:
                break
        gathered: list = [None] * world
        dist.all_gather_object(gathered, (rows, stream.weight_log))
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world, workers", [(2, 0), (3, 1)])
def test_ranks_partition_samples_and_follow_global_mixture(corpus, tmp_path, world, workers):
    out = str(tmp_path / "gathered.json")
    # spawn, not fork: forking a test process that already runs threads can deadlock the child
    mp.start_processes(_worker, args=(world, free_port(), corpus["native"], workers, out),
                       nprocs=world, join=True, start_method="spawn")
    gathered = json.load(open(out))
    logs = [g[1] for g in gathered]
    assert all(log == logs[0] for log in logs)
    index = np.concatenate([np.ravel([r[0] for r in g[0]]) for g in gathered])
    domain = np.concatenate([np.ravel([r[1] for r in g[0]]) for g in gathered])
    ids = np.concatenate([np.ravel([r[2] for r in g[0]]) for g in gathered])
    order = np.argsort(index)
    total = STEPS * BATCH * world
    assert (index[order] == np.arange(total)).all()
    # the union of ranks is exactly the single global mixture sequence, change included
    log = logs[0]
    cur = MixCursor(4, 1024, MixCheckpoint.initial(np.array(list(log[0][1].values()))))
    for f, w in log[1:]:
        cur.add_entry(f, np.array(list(w.values())))
    assert log[1][0] == (CHANGE_AT + (2 * workers if workers else 0)) * BATCH * world
    assert (domain[order] == cur.domains(0, total)).all()
    assert (ids // 1_000_000 == domain).all()
    for d, n in enumerate((700, 500, 300)):
        got = ids[order][domain[order] == d]
        slack = (2 * world * max(1, workers) - 1) * 64
        head = got[: max(0, n - slack)]
        assert len(np.unique(head)) == len(head), "two ranks yielded the same sample"


class _LoggingSource:
    """Wraps a native source; appends 'rank block' per block read to a log file."""

    def __new__(cls, path: str, log: str):
        from mixstream.sources.native import NativeSource

        class Logged(NativeSource):
            def read_block(self, index):  # type: ignore[override]
                with open(log, "a") as f:
                    f.write(f"{os.environ['RANK']} {index}\n")
                return super().read_block(index)

        return Logged(path)


def _node_worker(local_rank: int, node: int, per_node: int, port: int, paths: dict, logdir: str,
                 out: str) -> None:
    rank = node * per_node + local_rank  # the layout torchrun gives: RANK = node * nproc + local
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(2 * per_node))
    dist.init_process_group("gloo")
    try:
        sources = {k: _LoggingSource(v, f"{logdir}/{k}.log") for k, v in paths.items()}
        stream = MixStream(sources, weights=W0, seed=1, shuffle_window=64)  # window = 1 block
        loader = MixLoader(stream, batch_size=BATCH, num_workers=1)
        rows = []
        for step, batch in enumerate(loader):
            rows.append([batch["domain"].tolist(), batch["id"].tolist()])
            if step + 1 == 12:
                break
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, rows)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def _node(node: int, per_node: int, port: int, paths: dict, logdir: str, out: str) -> None:
    mp.start_processes(_node_worker, args=(node, per_node, port, paths, logdir, out),
                       nprocs=per_node, join=True, start_method="fork")


def test_two_nodes_each_rank_reads_only_its_blocks(tmp_path):
    """2 'nodes' x 2 local ranks (RANK = node * 2 + LOCAL_RANK): windows are whole blocks and
    the next window is reserved before it is prefetched, so within an epoch every block is read
    by exactly one rank; the union of ranks follows the mixture."""
    from conftest import domain_table, to_arrow

    from mixstream.shards.writer import write_shards

    paths = {}
    for i, name in enumerate("abc"):
        paths[name] = str(tmp_path / name)
        write_shards(to_arrow(domain_table(i, 2000)), paths[name], domain=name, rows_per_block=64)
    port = free_port()
    out = str(tmp_path / "rows.json")
    nodes = [mp.get_context("spawn").Process(target=_node, args=(n, 2, port, paths,
                                                                   str(tmp_path), out))
             for n in range(2)]
    for p in nodes:
        p.start()
    for p in nodes:
        p.join(120)
        assert p.exitcode == 0
    readers: dict[tuple[str, int], set[str]] = {}
    for name in ("a", "b", "c"):
        for line in open(tmp_path / f"{name}.log"):
            rank, block = line.split()
            readers.setdefault((name, int(block)), set()).add(rank)
    shared = {k: v for k, v in readers.items() if len(v) > 1}
    assert readers and not shared, shared
    assert len({r for rs in readers.values() for r in rs}) == 4
    rows = json.load(open(out))
    dom = np.concatenate([np.ravel([r[0] for r in g]) for g in rows])
    counts = np.bincount(dom, minlength=3) / len(dom)
    assert np.abs(counts - np.array(list(W0.values()))).max() < 0.01
