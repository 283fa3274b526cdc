"""Synthetic domains whose optimal loss is known: Markov chains and uniform noise.

Why Markov chains: their entropy rate is the best achievable test loss, so "learnable" vs
"noise" and "needs two tokens of context" are facts about the data, not guesses. All chains share
one vocabulary, so domains compete for the same model capacity (a mixture matters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chain:
    """A Markov chain of ``order`` (0 = i.i.d.) over ``vocab`` tokens: ``probs[context] -> [V]``."""

    order: int
    probs: np.ndarray  # [V**order, V]

    @property
    def vocab(self) -> int:
        return int(self.probs.shape[-1])

    def sample(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, length]`` int64 sequences, each started from uniformly random context tokens."""
        v = self.vocab
        out = np.empty((n, length), dtype=np.int64)
        out[:, : max(self.order, 1)] = rng.integers(0, v, size=(n, max(self.order, 1)))
        cdf = np.cumsum(self.probs, axis=1)
        cdf[:, -1] = 1.0
        for t in range(max(self.order, 1), length):
            ctx = np.zeros(n, dtype=np.int64)
            for j in range(self.order):
                ctx = ctx * v + out[:, t - self.order + j]
            u = rng.random(n)[:, None]
            out[:, t] = np.minimum((u > cdf[ctx]).sum(1), v - 1)
        return out

    def entropy_rate(self, n: int = 4000, rng: np.random.Generator | None = None) -> float:
        """Monte-Carlo entropy rate (nats/token) under the chain's own stationary contexts."""
        rng = rng or np.random.default_rng(0)
        x = self.sample(n // 64 + 1, 64, rng)
        v, lp = self.vocab, np.log(np.maximum(self.probs, 1e-300))
        tot, cnt = 0.0, 0
        for t in range(max(self.order, 1), x.shape[1]):
            ctx = np.zeros(len(x), dtype=np.int64)
            for j in range(self.order):
                ctx = ctx * v + x[:, t - self.order + j]
            tot -= float(lp[ctx, x[:, t]].sum())
            cnt += len(x)
        return tot / cnt


def random_chain(order: int, vocab: int, concentration: float,
                 rng: np.random.Generator) -> Chain:
    """Rows drawn from Dirichlet(``concentration``): small values give peaked, learnable rows."""
    rows = rng.dirichlet(np.full(vocab, concentration), size=vocab ** order)
    return Chain(order, rows)


def noise(vocab: int) -> Chain:
    """Uniform i.i.d. tokens: loss ``ln V`` whatever the model does (nothing to learn)."""
    return Chain(0, np.full((1, vocab), 1.0 / vocab))


def blend(a: Chain, b: Chain, share_a: float) -> Chain:
    """The chain whose next-token law is ``share_a * a + (1 - share_a) * b`` (same order)."""
    if a.order != b.order:
        raise ValueError("blend needs chains of the same order")
    return Chain(a.order, share_a * a.probs + (1 - share_a) * b.probs)
