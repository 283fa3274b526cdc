"""A plain PyTorch loop on a MixLoader: a tiny GPT (pure PyTorch) on three domains of real text,
ODM retuning the mixture, checkpoints that resume exactly; single process or torchrun (DDP).

    python examples/train_loop.py --out runs/loop --steps 40 --save-every 10
    python examples/train_loop.py --out runs/loop --steps 60 --resume     # continues exactly
    torchrun --nproc-per-node 2 examples/train_loop.py --out runs/loop2  # 2 CPU ranks (gloo)

The mixstream lines are marked ``# mixstream``. ``--trace``/``--kill-at`` exist for the resume
tests (tests/test_examples.py).
"""

from __future__ import annotations

import glob
import os
import re

import torch
import torch.distributed as dist
from common import SEQ_LEN, VOCAB, Trace, build_shards, die, example_parser
from torch.nn.parallel import DistributedDataParallel

from mixstream import MixLoader, MixStream
from mixstream.controllers import ODM
from mixstream.demo.model import GPTConfig, TinyGPT
from mixstream.losses import per_sequence_loss_and_tokens
from mixstream.observe import MixLogger


def last_checkpoint(out: str, world: int) -> tuple[int, str] | None:
    """The latest step for which every rank's file exists (a save cut short does not count)."""
    steps = sorted({int(m.group(1)) for f in glob.glob(os.path.join(out, "step*.rank*.pt"))
                    if (m := re.search(r"step(\d+)\.rank\d+\.pt$", f))}, reverse=True)
    for s in steps:
        if all(os.path.exists(os.path.join(out, f"step{s}.rank{r}.pt")) for r in range(world)):
            return s, os.path.join(out, f"step{s}.rank{{rank}}.pt")
    return None


def main() -> None:
    p = example_parser(__doc__, grad_accum=False)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    a = p.parse_args()
    torch.set_num_threads(1)
    if "WORLD_SIZE" in os.environ:  # torchrun
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    os.makedirs(a.out, exist_ok=True)

    stream = MixStream(build_shards(a.data or os.path.join(a.out, "shards")), seed=0)
    loader = MixLoader(stream, batch_size=a.batch_size, num_workers=a.workers)
    mixer = ODM(stream, warmup=2, observer=MixLogger(a.mixlog or os.path.join(a.out, "mix.jsonl")))
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=VOCAB, seq_len=SEQ_LEN, d_model=64, n_layer=2, n_head=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = 0
    found = last_checkpoint(a.out, world) if a.resume else None
    if found:
        start, pattern = found
        ckpt = torch.load(pattern.format(rank=rank), weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])  # mixstream: position, weights, controller
    net = DistributedDataParallel(model) if world > 1 else model
    trace = Trace(a.trace, rank=rank)

    batches = iter(loader)
    for step in range(start + 1, a.steps + 1):
        batch = next(batches)
        tokens = batch["input_ids"]  # int64
        logits = net(tokens)
        per_seq, counted = per_sequence_loss_and_tokens(logits, tokens)
        loss = (per_seq * counted).sum() / counted.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        trace.batch(step, batch, loss.item(), stream.weights)
        mixer.feedback(batch["domain"], per_seq, tokens=counted)  # mixstream: every rank
        if a.kill_at == step:
            die()
        if step % a.save_every == 0:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "loader": loader.state_dict()}  # mixstream
            path = os.path.join(a.out, f"step{step}.rank{rank}.pt")
            torch.save(state, path + ".tmp")
            os.replace(path + ".tmp", path)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
