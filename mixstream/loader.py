"""MixLoader: a ``DataLoader`` that tells its MixStream how many batches the trainer consumed.

A plain DataLoader never tells its dataset how far the trainer got, yet placing a weight change
deterministically and checkpointing exactly both need that count. Like mosaicml-streaming's
``StreamingDataLoader`` and torchdata's ``StatefulDataLoader``, MixLoader counts delivered
batches; the stream does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from .stream import MixStream


class _Counting:
    def __init__(self, it: Any, stream: MixStream):
        self._it = it
        self._stream = stream

    def __iter__(self) -> _Counting:
        return self

    def __next__(self) -> Any:
        batch = next(self._it)
        self._stream._delivered()
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._it, name)


class MixLoader(DataLoader):
    """``MixLoader(stream, batch_size=32, num_workers=4)``.

    By default the stream assembles whole batches itself (``batched=True``: fast path, numpy
    gathers from the reservoirs, DataLoader ``batch_size=None``). With ``batched=False`` or a
    ``collate_fn`` the stream yields single samples and the DataLoader collates them.
    Other keyword arguments go to ``DataLoader`` (``pin_memory``, ``persistent_workers``,
    ``multiprocessing_context``, ``prefetch_factor`` ...).
    """

    def __init__(self, stream: MixStream, batch_size: int, num_workers: int = 0, *,
                 batched: bool | None = None, collate_fn: Callable | None = None,
                 prefetch_factor: int | None = None, **kwargs: Any):
        if not isinstance(stream, MixStream):
            raise TypeError(f"MixLoader needs a MixStream, got {type(stream).__name__}")
        if batched is None:
            batched = collate_fn is None
        elif batched and collate_fn is not None:
            raise ValueError("collate_fn needs per-sample mode: pass batched=False")
        for key in ("sampler", "batch_sampler", "shuffle", "drop_last"):
            if key in kwargs:
                raise ValueError(f"MixLoader does not take {key!r}: MixStream decides the order")
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        stream.bind(batch_size, num_workers, prefetch_factor, batched=batched)
        extra: dict[str, Any] = {"prefetch_factor": prefetch_factor} if num_workers > 0 else {}
        if batched:
            super().__init__(stream, batch_size=None, num_workers=num_workers, **extra, **kwargs)
        else:
            if collate_fn is not None:
                kwargs["collate_fn"] = collate_fn
            super().__init__(stream, batch_size=batch_size, num_workers=num_workers, **extra,
                             **kwargs)
        self.stream = stream

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.stream._begin_iteration()
        return _Counting(super().__iter__(), self.stream)
