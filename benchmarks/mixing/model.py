"""The micro language model: a neural n-gram (window MLP) LM of ~20-40k parameters.

Why not a transformer: at this size a fixed context window learns the same Markov statistics,
costs ~10x less per step on a CPU, and makes "needs longer context" a precise property (the
window covers the longest chain order). The layers are ``nn.Linear`` so every controller's model
hooks work unchanged (LoRA targets for OP-Mix, gradient parameters for FastMix and AC-ODM).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MicroConfig:
    vocab: int = 16
    window: int = 3
    embed: int = 16
    hidden: int = 128


class MicroLM(nn.Module):
    """Next-token logits from the last ``window`` tokens (left-padded with a pad embedding)."""

    def __init__(self, cfg: MicroConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab + 1, cfg.embed)  # the last id is the left pad
        self.fc1 = nn.Linear(cfg.window * cfg.embed, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.vocab)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.cfg.window
        pad = torch.full((x.shape[0], w - 1), self.cfg.vocab, dtype=x.dtype, device=x.device)
        e = self.tok(torch.cat([pad, x], dim=1))                   # [B, T+w-1, E]
        ctx = e.unfold(1, w, 1)                                    # [B, T, E, w]
        h = ctx.transpose(2, 3).reshape(x.shape[0], x.shape[1], -1)
        h = F.relu(self.fc1(h))
        h = F.relu(self.fc2(h))
        return self.head(h)


def token_losses(model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Per-token next-token loss ``[B, T-1]`` of ``rows [B, T]``."""
    logits = model(rows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1),
                           reduction="none").view(rows.shape[0], -1)


def sequence_loss(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """Mean loss per sequence ``[B]`` (the ``loss_fn`` handed to controllers' model contexts)."""
    return token_losses(model, torch.as_tensor(batch["input_ids"]).long()).mean(1)


@torch.no_grad()
def eval_loss(model: nn.Module, rows: torch.Tensor, chunk: int = 256) -> float:
    """Mean next-token loss over ``rows`` (eval mode; restores train mode)."""
    was = model.training
    model.eval()
    tot = 0.0
    for i in range(0, len(rows), chunk):
        tot += float(token_losses(model, rows[i:i + chunk]).mean(1).sum())
    model.train(was)
    return tot / len(rows)
