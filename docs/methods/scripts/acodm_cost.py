"""AC-ODM per-step cost of its per-domain gradient signal (docs/methods/acodm.md).

Times a training step of the demo TinyGPT (4 layers, d=192, 128 tokens) with K=6 domains, each
step = one single-domain micro-batch of 2 sequences per domain + one mixed micro-batch of 4, and
compares: plain training; AC-ODM with ``grad_source="extra"`` (extra forward + K backward passes
on 3 MLP output matrices); AC-ODM with ``grad_source="backward"`` (recorded from the training
backward). The agent is tiny so the figure isolates the gradient signal; ``--hidden 1024``
gives the released agent size.

    .venv/bin/python docs/methods/scripts/acodm_cost.py [--steps 30] [--hidden 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from mixstream.controllers import ACODM
from mixstream.demo.model import GPTConfig, TinyGPT, token_losses
from mixstream.model import ModelContext

K = 6
D = [f"d{k}" for k in range(K)]


def loss_fn(model, batch):
    return token_losses(model, batch["tokens"]).mean(1)


def run(mode: str, steps: int, hidden: int) -> tuple[float, float, float]:
    """Median step time, median time inside the recorder, median time inside feedback."""
    from controller_fakes import FakeStream  # tests/ is put on the path by main()

    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=512, seq_len=128, d_model=192, n_layer=4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctx = ModelContext(model, loss_fn, D)
    mats = [f"blocks.{i}.mlp.2.weight" for i in (1, 2, 3)]
    ac = None
    if mode != "plain":
        ac = ACODM(FakeStream(D), total_steps=1000, warmup=5, ctx=ctx, grad_params=mats,
                   norm_params=[f"blocks.{i}.mlp.2.weight" for i in range(4)], hidden=hidden,
                   layers=2, grad_source=mode)
    g = torch.Generator().manual_seed(1)
    times, rec_times, fb_times = [], [], []
    spent = [0.0]
    if ac is not None and mode == "backward":
        rec = ac.recorder
        flat = rec._flat

        def timed_flat():  # the recorder's work: a copy of the chosen .grad per call
            t = time.perf_counter()
            out = flat()
            spent[0] += time.perf_counter() - t
            return out
        rec._flat = timed_flat  # type: ignore[method-assign]
    for step in range(steps):
        micro = [{"tokens": torch.randint(0, 512, (2, 129), generator=g),
                  "domain": torch.full((2,), k)} for k in range(K)]
        mixed = {"tokens": torch.randint(0, 512, (4, 129), generator=g),
                 "domain": torch.randint(0, K, (4,), generator=g)}
        t0 = time.perf_counter()
        spent[0] = 0.0
        opt.zero_grad()
        n = 2 * K + 4
        seen = []
        for k, mb in enumerate(micro + [mixed]):
            losses = loss_fn(model, mb)
            seen.append(losses.detach())
            if ac is not None and mode == "backward" and k < K:
                with ac.recorder.record(k):
                    (losses.sum() / n).backward()
            else:
                (losses.sum() / n).backward()
        opt.step()
        t1 = time.perf_counter()
        if ac is not None:
            batch = {key: torch.cat([b[key] for b in micro + [mixed]]) for key in mixed}
            ac.feedback(batch["domain"], torch.cat(seen), batch=batch)
        if step >= 3:
            times.append(time.perf_counter() - t0)
            rec_times.append(spent[0])
            fb_times.append(time.perf_counter() - t1)

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]
    return med(times), med(rec_times), med(fb_times)


def main() -> None:
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(1)
    base, _, _ = run("plain", a.steps, a.hidden)
    print(f"plain step: {1000 * base:.1f} ms (median)")
    for mode in ("extra", "backward"):
        t, rec, fb = run(mode, a.steps, a.hidden)
        print(f"grad_source={mode:8s}: {1000 * t:.1f} ms  ({100 * (t / base - 1):+.1f} %); "
              f"inside the recorder {1000 * rec:.2f} ms ({100 * rec / base:.2f} % of a plain "
              f"step), inside feedback {1000 * fb:.1f} ms")


if __name__ == "__main__":
    main()
