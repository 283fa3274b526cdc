"""MixLoader: a stateful ``DataLoader`` that tells its MixStream how far the trainer got.

A plain DataLoader never tells its dataset how far the trainer got, yet placing a weight change
deterministically and checkpointing exactly both need that count. Like mosaicml-streaming's
``StreamingDataLoader`` and torchdata's ``StatefulDataLoader``, MixLoader counts delivered
batches and exposes ``state_dict()`` / ``load_state_dict()`` (the protocol Lightning,
torchdata and ``torch.distributed.checkpoint`` use); the stream does the rest.

Two counts matter: batches *fetched* (where a weight change may still be placed: the DataLoader
has requested ``fetched + prefetch depth`` batches) and batches *trained on* (the checkpoint
position). They differ for trainers that fetch ahead — Lightning fetches one batch early — and
such a trainer (or its integration) sets ``loader.trained_batches`` so that a checkpoint does
not skip the fetched-but-untrained batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader

from .ring import RingRef
from .stream import MixStream


class _Counting:
    def __init__(self, it: Any, loader: MixLoader):
        self._it = it
        self._loader = loader
        self._stream = loader.stream

    def __iter__(self) -> _Counting:
        return self

    def __next__(self) -> Any:
        stream = self._stream
        link = stream.link
        if link.take_restart():
            # the domain set changed, or a checkpoint was loaded under this iteration (a
            # rollback): new readers from the new position on, whose claims the old ones
            # did not share (the old ones would go on from where they were, silently)
            self._it = self._loader._start(new_workers=True)
        link.fetching()  # the DataLoader may request one more batch in here
        try:
            batch = next(self._it)
        except BaseException:
            link.fetch_failed()
            raise
        if isinstance(batch, RingRef):  # a worker wrote it to a shared slot: copy it out
            ring = link.ring
            assert ring is not None
            # the iterator's own flag: pin_memory=True without an accelerator is switched off
            batch = ring.take(batch, pin=bool(getattr(self._it, "_pin_memory", False)))
        link.delivered(batch)
        return batch

    def __len__(self) -> int:
        return len(self._it)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._it, name)


class MixLoader(DataLoader):
    """``MixLoader(stream, batch_size=32, num_workers=4)``.

    By default the stream assembles whole batches itself (``batched=True``: fast path, numpy
    gathers from the reservoirs, DataLoader ``batch_size=None``). With ``batched=False`` or a
    ``collate_fn`` the stream yields single samples and the DataLoader collates them.
    Other keyword arguments go to ``DataLoader`` (``pin_memory``, ``persistent_workers``,
    ``multiprocessing_context``, ``prefetch_factor`` ...). ``reader_threads=N`` (with
    ``num_workers=0``): N reader threads in this process instead of worker processes — the same
    plan, batches and checkpoints as N workers (:mod:`mixstream.threads`).
    """

    def __init__(self, stream: MixStream, batch_size: int, num_workers: int = 0, *,
                 batched: bool | None = None, collate_fn: Callable | None = None,
                 prefetch_factor: int | None = None, reader_threads: int = 0, **kwargs: Any):
        if not isinstance(stream, MixStream):
            raise TypeError(f"MixLoader needs a MixStream, got {type(stream).__name__}")
        if batched is None:
            batched = collate_fn is None
        elif batched and collate_fn is not None:
            raise ValueError("collate_fn needs per-sample mode: pass batched=False")
        for key in ("sampler", "batch_sampler", "shuffle", "drop_last"):
            if key in kwargs:
                raise ValueError(f"MixLoader does not take {key!r}: MixStream decides the order")
        if kwargs.get("in_order", True) is not True:
            raise ValueError("MixLoader needs in_order=True: out-of-order delivery makes the "
                             "delivered count say nothing about which batches were trained on, "
                             "so a resume would lose and repeat batches")
        if reader_threads < 0 or (reader_threads and num_workers):
            raise ValueError(f"reader_threads={reader_threads} with num_workers={num_workers}: use "
                             f"threads or worker processes, not both")
        if (num_workers > 0 or reader_threads > 0) and prefetch_factor is None:
            prefetch_factor = 2
        if reader_threads:
            stream.bind(batch_size, reader_threads, prefetch_factor, batched=batched, loader=True,
                        threads=True)
        else:
            stream.bind(batch_size, num_workers, prefetch_factor, batched=batched, loader=True)
        extra: dict[str, Any] = {"prefetch_factor": prefetch_factor} if num_workers > 0 else {}
        if batched:  # the stream's batches are tensors already: no default_convert walk
            super().__init__(stream, batch_size=None, num_workers=num_workers,
                             collate_fn=_as_is, **extra, **kwargs)
        else:
            if collate_fn is not None:
                kwargs["collate_fn"] = collate_fn
            super().__init__(stream, batch_size=batch_size, num_workers=num_workers, **extra,
                             **kwargs)
        self.stream = stream

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.stream.link.take_restart()
        return _Counting(self._start(), self)

    def _start(self, new_workers: bool = False) -> Any:
        """Publish the start and create the DataLoader iterator. ``new_workers``: the reader
        payload changed (the domain set), so even persistent workers are replaced."""
        link = self.stream.link
        link.started = True
        last = getattr(self, "_live", None)
        if last is not None and (new_workers or not self.persistent_workers):
            # one live iteration per loader: an older iterator's workers would still fill the
            # shared batch slots (and the stream has one position)
            shutdown = getattr(last, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        if new_workers:
            self._iterator = None
        link.begin_iteration()
        with link.creating_workers():  # workers forked/spawned now carry the flag
            it = super().__iter__()
        if self.persistent_workers and self.num_workers > 0:
            link.freeze_workers()  # those workers keep these shared buffers
        self._live = it
        return it

    # -- the stateful-loader protocol -------------------------------------------------------
    @property
    def trained_batches(self) -> int:
        """Batches the trainer has trained on (default: the batches fetched)."""
        return self.stream.trained_batches

    @trained_batches.setter
    def trained_batches(self, value: int) -> None:
        self.stream.trained_batches = value

    def state_dict(self) -> dict[str, Any]:
        """The stream's state (and everything attached) at ``trained_batches``; plain Python.

        Lightning saves stateful loaders by itself, but it fetches one batch ahead: without
        ``MixStreamCallback`` (which sets ``trained_batches``) the checkpoint would sit one batch
        late and a resume would skip a batch, so that case is refused."""
        stream = self.stream
        if not stream.trained_batches_set and stream.consumed_batches > 0 and \
                _called_by_lightning():
            raise RuntimeError(
                "Lightning is saving this MixLoader, but it fetches one batch ahead and nothing "
                "told the loader which batches were trained: the checkpoint would skip a batch "
                "on resume. Add mixstream.integrations.lightning.MixStreamCallback(loader) to "
                "Trainer(callbacks=[...])")
        return stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next batch of a running iteration, or the first of the
        next ``iter(loader)``, is the one after the checkpoint."""
        self.stream.load_state_dict(state)


def _as_is(batch: Any) -> Any:
    """Batched mode's collate: the stream assembled the batch (tensors, lists of tensors or
    of Python objects), so the DataLoader's ``default_convert`` would only walk it (~4% of
    the single-process loop)."""
    return batch


def _called_by_lightning() -> bool:
    import sys

    frame: Any = sys._getframe(2)
    for _ in range(40):
        if frame is None:
            return False
        mod = frame.f_globals.get("__name__", "")
        if mod.startswith(("lightning.", "pytorch_lightning.")):
            return True
        frame = frame.f_back
    return False
