"""Stream settings: what a checkpoint must match, and the constructor's argument checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

ON_EXHAUSTED = ("restart", "stop")


@dataclass(frozen=True)
class Settings:
    """What must match between a checkpoint and the stream loading it."""

    seed: int
    mix_block: int
    shuffle: bool
    on_exhausted: str


def check_args(domains: Any, on_exhausted: str, shuffle_window: int, token_dtype: Any,
               max_pending: int | None) -> None:
    """Refuse bad MixStream arguments before any file is opened."""
    if not isinstance(domains, Mapping) or not domains:
        raise ValueError("domains must be a non-empty mapping {name: path or source}")
    for name in domains:
        if not isinstance(name, str) or not name:
            raise ValueError(f"domain names must be non-empty strings, got {name!r}")
    if on_exhausted not in ON_EXHAUSTED:
        raise ValueError(f"on_exhausted must be one of {ON_EXHAUSTED}, got {on_exhausted!r}")
    if shuffle_window < 1:
        raise ValueError(f"shuffle_window must be >= 1, got {shuffle_window}")
    if token_dtype is not None and not isinstance(token_dtype, torch.dtype):
        raise ValueError(f"token_dtype must be a torch.dtype or None, got {token_dtype!r}")
    if max_pending is not None and max_pending < 2:
        raise ValueError(f"max_pending_weight_changes must be >= 2, got {max_pending}")
