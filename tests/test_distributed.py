"""A real multi-process gloo group: ranks never share a sample, the union follows the mixture."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from mixstream import MixLoader, MixStream
from mixstream.plan.mixture import MixCheckpoint, MixCursor

W0 = {"a": 0.5, "b": 0.3, "c": 0.2}
W1 = {"a": 0.0, "b": 0.5, "c": 0.5}
STEPS, BATCH, CHANGE_AT = 30, 8, 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world, workers", [(2, 0), (3, 1)])
def test_ranks_partition_samples_and_follow_global_mixture(corpus, tmp_path, world, workers):
    out = str(tmp_path / "gathered.json")
    mp.start_processes(_worker, args=(world, _free_port(), corpus["native"], workers, out),
                       nprocs=world, join=True, start_method="fork")
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
        slack = (world * max(1, workers) - 1) * 32
        head = got[: max(0, n - slack)]
        assert len(np.unique(head)) == len(head), "two ranks yielded the same sample"
