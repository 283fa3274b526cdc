"""Per-element weights for a training loss from per-domain loss weights (DoReMi, FastMix)."""

from __future__ import annotations

import numpy as np
import torch


def element_weights(domain_weights: np.ndarray, domain: torch.Tensor, loss: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weights shaped like ``loss`` (``[B]`` per sequence or ``[B, T]`` per token): each
    sample's domain weight, times the token mask for per-token losses."""
    wt = torch.as_tensor(domain_weights, dtype=loss.dtype, device=loss.device)[domain.to(loss.device)]
    if loss.dim() == 2:
        m = torch.ones_like(loss) if mask is None else mask.to(loss.dtype)
        return wt[:, None] * m
    if loss.dim() == 1:
        return wt
    raise ValueError(f"loss must be [B] or [B, T], got shape {tuple(loss.shape)}")
