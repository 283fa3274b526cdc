"""Feedback aggregation: per-sample losses -> per-domain sums, all-reduced across ranks.

Pure functions. A controller never sees per-sample tensors: every algorithm in
:mod:`mixstream.controllers` works on per-domain sums, which can be summed across ranks with one
``all_reduce`` of a small ``[ROWS, K]`` float64 tensor, so every rank computes the same weights.

This module sits below the controllers, :mod:`mixstream.observe` and :mod:`mixstream.validation`
(all three use :class:`StepFeedback` or :func:`all_reduce_sum`), so none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

# Row layout of the aggregated tensor.
COUNT, TOKENS, SEQ_LOSS, TOK_LOSS, EXCESS = range(5)
ROWS = 5


@dataclass(frozen=True)
class StepFeedback:
    """Per-domain statistics of one optimizer step, summed over all ranks.

    ``counts``: sequences per domain; ``tokens``: loss tokens per domain (= ``counts`` when the
    trainer gave per-sequence losses without token counts); ``seq_loss_sum``: sum of per-sequence
    mean losses; ``tok_loss_sum``: sum of token losses; ``excess_sum``: sum over tokens of
    ``max(loss - ref_loss, 0)`` (DoReMi). ``step`` counts feedback calls (1 = first).
    """

    step: int
    counts: np.ndarray
    tokens: np.ndarray
    seq_loss_sum: np.ndarray
    tok_loss_sum: np.ndarray
    excess_sum: np.ndarray
    has_loss: bool = True
    has_ref: bool = False
    has_tokens: bool = False  # token counts were given (tokens= or per-token losses)

    @property
    def present(self) -> np.ndarray:
        return self.counts > 0

    def _div(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.full(num.shape, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    @property
    def seq_mean(self) -> np.ndarray:
        """Sequence-weighted mean loss per domain (NaN where absent)."""
        return self._div(self.seq_loss_sum, self.counts)

    @property
    def tok_mean(self) -> np.ndarray:
        """Token-weighted mean loss per domain (NaN where absent)."""
        return self._div(self.tok_loss_sum, self.tokens)

    @property
    def excess_mean(self) -> np.ndarray:
        """Token-weighted mean clipped excess loss per domain (NaN where absent)."""
        return self._div(self.excess_sum, self.tokens)

    def mean(self, weighting: str) -> np.ndarray:
        if weighting == "token":
            return self.tok_mean
        if weighting == "sequence":
            return self.seq_mean
        raise ValueError(f"unknown loss weighting {weighting!r}; use 'token' or 'sequence'")

    @property
    def batch_mean(self) -> float:
        """Sequence-weighted mean loss over the whole step (NaN if empty)."""
        n = self.counts.sum()
        return float(self.seq_loss_sum.sum() / n) if n > 0 else float("nan")


def aggregate(
    domain: torch.Tensor,
    num_domains: int,
    loss: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
    tokens: torch.Tensor | None = None,
    ref_loss: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum per-sample feedback per domain; returns a ``[ROWS, K]`` float64 CPU tensor.

    ``loss`` is either per sequence ``[B]`` (mean token loss of each sequence; ``tokens`` [B]
    optionally gives each sequence's loss-token count) or per token ``[B, T]`` (``mask`` [B, T]
    marks loss tokens). ``ref_loss`` has the shape of ``loss``; with per-token losses the excess
    is clipped per token (as in DoReMi), with per-sequence losses per sequence.
    """
    domain = torch.as_tensor(domain).reshape(-1)
    if domain.dtype.is_floating_point or domain.dtype == torch.bool:
        raise ValueError(f"domain ids must be an integer tensor, got dtype {domain.dtype}")
    b = domain.numel()
    dev = domain.device
    out = torch.zeros(ROWS, num_domains, dtype=torch.float64, device=dev)
    if b == 0:
        return out.cpu()
    lo, hi = int(domain.min()), int(domain.max())
    if lo < 0 or hi >= num_domains:
        raise ValueError(f"domain id {lo if lo < 0 else hi} out of range for {num_domains} "
                         f"domains; batch['domain'] must index stream.domains")
    domain = domain.long()
    ones = torch.ones(b, dtype=torch.float64, device=dev)
    out[COUNT].index_add_(0, domain, ones)
    if loss is None:
        if tokens is None:
            out[TOKENS] = out[COUNT]
        else:
            tok = torch.as_tensor(tokens).to(dev, torch.float64).reshape(-1)
            if tok.numel() != b:
                raise ValueError(f"got {tok.numel()} token counts for {b} domain ids")
            out[TOKENS].index_add_(0, domain, tok)
        return out.cpu()
    loss = loss.detach().to(device=dev, dtype=torch.float64)
    if loss.dim() == 2:
        if loss.shape[0] != b:
            raise ValueError(f"per-token loss has {loss.shape[0]} rows for {b} domain ids")
        m = torch.ones_like(loss) if mask is None else mask.detach().to(dev, torch.float64)
        if m.shape != loss.shape:
            raise ValueError(f"mask shape {tuple(m.shape)} != loss shape {tuple(loss.shape)}")
        lossm = torch.where(m > 0, loss, torch.zeros_like(loss))
        tok = m.sum(1)
        tok_sum = (lossm * m).sum(1)
        seq = torch.where(tok > 0, tok_sum / tok.clamp_min(1e-300), torch.zeros_like(tok))
        has = (tok > 0).to(torch.float64)
        out[COUNT].zero_().index_add_(0, domain, has)  # sequences without loss tokens don't count
        if ref_loss is not None:
            ref = ref_loss.detach().to(dev, torch.float64)
            if ref.shape != loss.shape:
                raise ValueError(f"ref_loss shape {tuple(ref.shape)} != loss shape {tuple(loss.shape)}")
            exc = ((lossm - torch.where(m > 0, ref, torch.zeros_like(ref))).clamp_min(0) * m).sum(1)
    elif loss.dim() == 1:
        if loss.numel() != b:
            raise ValueError(f"got {loss.numel()} per-sequence losses for {b} domain ids")
        tok = ones if tokens is None else torch.as_tensor(tokens).to(dev, torch.float64).reshape(-1)
        if tok.numel() != b:
            raise ValueError(f"got {tok.numel()} token counts for {b} domain ids")
        seq = loss
        tok_sum = loss * tok
        if ref_loss is not None:
            ref = ref_loss.detach().to(dev, torch.float64).reshape(-1)
            if ref.numel() != b:
                raise ValueError(f"got {ref.numel()} reference losses for {b} domain ids")
            exc = (loss - ref).clamp_min(0) * tok
    else:
        raise ValueError(f"loss must be [batch] (per sequence) or [batch, seq] (per token), got "
                         f"shape {tuple(loss.shape)}")
    if not bool(torch.isfinite(seq).all()):
        bad = int(domain[~torch.isfinite(seq)][0])
        raise ValueError(f"non-finite loss for domain index {bad}; skip this step's feedback or "
                         f"fix the loss (NaN/inf would corrupt the controller state)")
    out[TOKENS].index_add_(0, domain, tok)
    out[SEQ_LOSS].index_add_(0, domain, seq)
    out[TOK_LOSS].index_add_(0, domain, tok_sum)
    if ref_loss is not None:
        out[EXCESS].index_add_(0, domain, exc)
    return out.cpu()


def dist_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks (no-op without an initialised process group >1 rank)."""
    if not dist_active():
        return t
    backend = str(dist.get_backend())
    if "nccl" in backend and torch.cuda.is_available():
        dev_t = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(dev_t, op=dist.ReduceOp.SUM)
        return dev_t.cpu()
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def to_feedback(step: int, sums: torch.Tensor, *, has_loss: bool, has_ref: bool,
                has_tokens: bool) -> StepFeedback:
    a = sums.to(torch.float64).numpy()
    return StepFeedback(step=step, counts=a[COUNT].copy(), tokens=a[TOKENS].copy(),
                        seq_loss_sum=a[SEQ_LOSS].copy(), tok_loss_sum=a[TOK_LOSS].copy(),
                        excess_sum=a[EXCESS].copy(), has_loss=has_loss, has_ref=has_ref,
                        has_tokens=has_tokens)
