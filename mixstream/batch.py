"""The batch a MixStream delivers, as a type.

Every batch carries ``domain`` (the domain id of each row, in stream order) and ``index`` (its
global sample index: exactly-once is checkable from batches alone), plus the columns of the
data. The columns the converter writes are named here; a corpus with other columns has them
too (read them with ``batch.get(name)`` or ``cast``), which a ``TypedDict`` cannot list.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Required, TypedDict  # (typing.Required: Python >= 3.11)


class Batch(TypedDict, total=False):
    """A batched-mode batch: tensors for fixed-width columns, lists for ragged/object ones."""

    domain: Required[torch.Tensor]  # int64 [B]: index into MixStream.domains
    index: Required[torch.Tensor]  # int64 [B]: global sample index ((t*world+r)*B + i)
    input_ids: torch.Tensor | list[torch.Tensor]  # token ids, widened to token_dtype
    loss_mask: torch.Tensor | list[torch.Tensor]  # 1 where the loss counts (instruction data)
    document_ids: torch.Tensor | list[torch.Tensor]  # packed documents, for attention masks
    text: list[Any]


class Sample(TypedDict, total=False):
    """A per-sample-mode item (before the DataLoader collates): one row of a batch."""

    domain: Required[int]
    index: Required[int]
    input_ids: torch.Tensor
    loss_mask: torch.Tensor
    document_ids: torch.Tensor
    text: Any
