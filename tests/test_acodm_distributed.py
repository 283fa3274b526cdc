"""Two gloo ranks (spawn) with different data: AC-ODM's and FastMix's weights stay identical."""

import json

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from controller_fakes import FakeStream
from dist_helpers import free_port

from mixstream.controllers import ACODM, FastMix

D = ["a", "b", "c"]
STEPS = 12


def rank_inputs(step: int, rank: int):
    g = torch.Generator().manual_seed(1000 * rank + step)
    ids = torch.randint(0, 3, (8,), generator=g)
    loss = torch.rand(8, generator=g, dtype=torch.float64) + ids + rank
    grads = torch.randn(3, 4, generator=g, dtype=torch.float64) + rank
    ref = torch.randn(3, generator=g, dtype=torch.float64) * (rank + 1)
    present = torch.tensor([True, rank == 0, True])   # rank 1 never sees "b"
    return ids, loss, grads, ref, present


def drive(rank: int) -> list:
    torch.set_num_threads(1)
    ac = ACODM(FakeStream(D), total_steps=50, warmup=4, n_norms=2, hidden=16, layers=1,
               minibatch=4)
    fm = FastMix(FakeStream(D), apply_to="sampling", lr=0.1)
    traj = []
    for t in range(STEPS):
        ids, loss, grads, ref, present = rank_inputs(t, rank)
        ac.feedback(ids, loss, grads=grads, norms=[3.0 + t, 1.0])
        fm.observe_gradients({"ref": ref, "present": present})
        traj.append([ac.weight_vector.tolist(), fm.weight_vector.tolist()])
    return traj


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump(drive(rank), fh)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def test_two_ranks_identical_acodm_and_fastmix_weights(tmp_path):
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1                                       # bit-identical on both ranks
    w = np.asarray(r0)
    assert not np.allclose(w[0], w[-1])                   # the weights did move
    assert not np.allclose(np.asarray(drive(0)), w)       # and differ from one rank's own data
