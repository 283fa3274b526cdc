"""A tiny causal language model and batches for the ModelContext tests (no tests here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, DIM, SEQ = 17, 12, 9
DOMAINS = ["web", "code", "books"]


class TinyLM(nn.Module):
    """Embedding -> (attention-free) two linear blocks -> LM head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, DIM)
        self.block = nn.ModuleDict({"ff_proj": nn.Linear(DIM, 2 * DIM), "ff_out": nn.Linear(2 * DIM, DIM)})
        self.drop = nn.Dropout(0.1)
        self.lm_head = nn.Linear(DIM, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = h + self.block["ff_out"](torch.tanh(self.block["ff_proj"](self.drop(h))))
        return self.lm_head(h)


def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy, shape [B]."""
    ids = batch["input_ids"]
    logits = model(ids[:, :-1])
    tok = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="none")
    return tok.view(ids.shape[0], -1).mean(dim=1)


def make_batch(domains: list[int], seed: int = 0) -> dict:
    """Each domain has its own token pattern, so per-domain gradients differ."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for d in domains:
        start = torch.randint(0, VOCAB, (1,), generator=g)
        step = 1 + d  # web: +1, code: +2, books: +3 (mod VOCAB), plus noise
        seq = (start + step * torch.arange(SEQ)) % VOCAB
        noise = torch.rand(SEQ, generator=g) < 0.15
        seq[noise] = torch.randint(0, VOCAB, (int(noise.sum()),), generator=g)
        rows.append(seq)
    return {"input_ids": torch.stack(rows), "domain": torch.tensor(domains, dtype=torch.long)}
