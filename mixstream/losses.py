"""Per-sequence language-model losses that honour loss masks, padding and packed documents.

Controllers (DoReMi, ODM, ADO, AC-ODM, …) and :mod:`mixstream.validation` take one loss per
sequence; with instruction data a plain mean over all positions would count prompt tokens,
padding and predictions across the boundary of two packed documents. Every function here
uses the causal shift (position ``t`` predicts token ``t + 1``) and the same rule for which
targets count, so losses and token counts always agree:

a target ``t + 1`` counts when

* ``labels[t + 1] != ignore_index`` (``labels`` default to ``input_ids``),
* ``attention_mask[t] == attention_mask[t + 1] == 1`` (no prediction from or of padding),
* ``loss_mask[t + 1] != 0`` (``mixstream-shard convert`` writes 1 on response tokens only),
* ``document_ids[t] == document_ids[t + 1]`` (the first token of a packed document is not
  predicted from the previous document).

Every mask is aligned with ``input_ids`` (``[B, L]``); ``logits`` are ``[B, L, V]``.
A sequence without any counted target gets loss 0 and token count 0, so token-weighted
means (``sum(loss * tokens) / sum(tokens)``) ignore it.

:func:`batch_losses` reads those columns from a mixstream batch; :func:`document_position_ids`
and :func:`document_attention_mask` turn ``document_ids`` into what models take to attend
within each packed document only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum")


def _aligned(name: str, t: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    if t is None:
        return None
    if t.shape != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; it must match input_ids "
                         f"{tuple(shape)} (one value per token)")
    return t


def target_mask(input_ids: torch.Tensor, *, loss_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                document_ids: torch.Tensor | None = None,
                ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets [B, L-1] int64, counted [B, L-1] bool)``: the shifted targets and which count.

    Uncounted targets are set to 0 so that they are always valid class indices.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    shape = input_ids.shape
    labels = _aligned("labels", labels, shape)
    loss_mask = _aligned("loss_mask", loss_mask, shape)
    attention_mask = _aligned("attention_mask", attention_mask, shape)
    document_ids = _aligned("document_ids", document_ids, shape)
    source = input_ids if labels is None else labels
    targets = source[:, 1:].long()
    counted = targets != ignore_index if labels is not None else torch.ones_like(
        targets, dtype=torch.bool)
    if attention_mask is not None:
        am = attention_mask.bool()
        counted &= am[:, 1:] & am[:, :-1]
    if loss_mask is not None:
        counted &= loss_mask[:, 1:].bool()
    if document_ids is not None:
        counted &= document_ids[:, 1:] == document_ids[:, :-1]
    return targets.masked_fill(~counted, 0), counted


def per_sequence_tokens(input_ids: torch.Tensor, *, loss_mask: torch.Tensor | None = None,
                        labels: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None,
                        document_ids: torch.Tensor | None = None,
                        ignore_index: int = -100) -> torch.Tensor:
    """Counted targets per sequence, ``[B]`` int64 (the weights of a token-weighted mean)."""
    _, counted = target_mask(input_ids, loss_mask=loss_mask, labels=labels,
                             attention_mask=attention_mask, document_ids=document_ids,
                             ignore_index=ignore_index)
    return counted.sum(dim=1)


def per_sequence_loss_and_tokens(
    logits: torch.Tensor, input_ids: torch.Tensor, *, loss_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
    document_ids: torch.Tensor | None = None, ignore_index: int = -100,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss [B] float32, tokens [B] int64)`` from one cross-entropy pass.

    The loss keeps the graph (differentiable in ``logits``); cross-entropy runs in float32
    as Hugging Face models do, whatever the logits' dtype.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits must be [batch, length, vocab] with the length of input_ids "
                         f"{tuple(input_ids.shape)}, got {tuple(logits.shape)} (pass the logits "
                         f"of every position; the shift happens here)")
    targets, counted = target_mask(input_ids, loss_mask=loss_mask, labels=labels,
                                   attention_mask=attention_mask, document_ids=document_ids,
                                   ignore_index=ignore_index)
    b, n = targets.shape
    if n == 0:
        zero = logits.sum(dim=(1, 2)) * 0.0
        return zero.float(), torch.zeros(b, dtype=torch.int64, device=logits.device)
    flat = F.cross_entropy(logits[:, :-1].reshape(b * n, -1).float(), targets.reshape(-1),
                           reduction="none").view(b, n)
    flat = flat.masked_fill(~counted, 0.0)
    tokens = counted.sum(dim=1)
    loss = flat.sum(dim=1)
    if reduction == "mean":
        loss = loss / tokens.clamp(min=1)
    return loss, tokens


def per_sequence_loss(logits: torch.Tensor, input_ids: torch.Tensor, *,
                      loss_mask: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None,
                      document_ids: torch.Tensor | None = None,
                      ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Loss per sequence ``[B]``: mean (or sum) cross-entropy over the counted targets."""
    return per_sequence_loss_and_tokens(
        logits, input_ids, loss_mask=loss_mask, labels=labels, attention_mask=attention_mask,
        document_ids=document_ids, ignore_index=ignore_index, reduction=reduction)[0]


def batch_losses(logits: torch.Tensor, batch: Mapping[str, Any], *,
                 token_column: str = "input_ids", ignore_index: int = -100,
                 reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss [B], tokens [B])`` for a mixstream batch, using whichever of ``loss_mask``,
    ``labels``, ``attention_mask`` and ``document_ids`` it carries.

    The return value is what :func:`mixstream.validation.per_domain_loss` accepts from a
    ``loss_fn`` for token-weighted means.
    """
    def column(name: str) -> torch.Tensor | None:
        v = batch.get(name)
        if v is None:
            return None
        return torch.as_tensor(v, device=logits.device)

    input_ids = column(token_column)
    if input_ids is None:
        raise KeyError(f"batch has no {token_column!r} column (columns: {sorted(batch)})")
    return per_sequence_loss_and_tokens(
        logits, input_ids, loss_mask=column("loss_mask"), labels=column("labels"),
        attention_mask=column("attention_mask"), document_ids=column("document_ids"),
        ignore_index=ignore_index, reduction=reduction)


def document_position_ids(document_ids: torch.Tensor) -> torch.Tensor:
    """Positions restarting at 0 at each document start, ``[B, L]`` int64.

    Hugging Face models given these ``position_ids`` (with flash-attention 2 / SDPA packing
    support) attend within each document only.
    """
    if document_ids.dim() != 2:
        raise ValueError(f"document_ids must be [batch, length], got {tuple(document_ids.shape)}")
    b, n = document_ids.shape
    idx = torch.arange(n, device=document_ids.device).expand(b, n)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_pos = torch.where(starts, idx, torch.zeros_like(idx))
    return idx - torch.cummax(start_pos, dim=1).values


def document_attention_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Causal attention within each document: ``[B, L, L]`` bool, True where query ``i`` may
    attend to key ``j`` (``j <= i`` and same document). For SDPA's ``attn_mask`` add a head
    dimension (``mask[:, None]``)."""
    if document_ids.dim() != 2:
        raise ValueError(f"document_ids must be [batch, length], got {tuple(document_ids.shape)}")
    n = document_ids.shape[1]
    same = document_ids[:, :, None] == document_ids[:, None, :]
    causal = torch.ones(n, n, dtype=torch.bool, device=document_ids.device).tril()
    return same & causal
