"""The handshake between a stream and the loader that drives it.

A loader knows things the stream cannot see: when it is inside ``next()`` (the DataLoader may
request one more batch there, so a weight change must land later), when it creates its
iterator (workers forked then carry the "driven by a loader" flag), when a batch was delivered
(the position), and it must learn from the stream when the domain set changed (new workers).
This small interface is all MixLoader, StagePlan and the reader threads use of the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class _Session(Protocol):
    """What the link needs of the session (the session owns the link: no import upward)."""

    lock: Any
    position: Any
    plan: Any

    def begin_iteration(self) -> None: ...


class LoaderLink:
    """Flags and calls between one session and its loader; every change holds the lock."""

    def __init__(self, session: _Session):
        self._session = session
        self.driven = False  # bound by a MixLoader (which counts batches)
        self.iterating = False  # the loader is creating its iterator (workers carry this)
        self.in_next = False  # the loader is inside next(): one more batch may be requested
        self.restart = False  # domain set changed / checkpoint loaded: the iterator restarts
        self.started = False  # an iteration has started (initial weights are fixed)
        self.mute = 0  # >0: set_weights is ignored (objects rebuilt while resuming)
        self.hooks: list[Callable[[Any], None]] = []  # called with each delivered batch

    @property
    def lock(self) -> Any:
        return self._session.lock

    @property
    def ring(self) -> Any:
        """The shared batch slots worker processes write to (None: batches come pickled)."""
        return self._session.plan.ring

    def begin_iteration(self) -> None:
        """Publish the start of an iteration (before the loader creates its workers)."""
        self._session.begin_iteration()

    @contextlib.contextmanager
    def creating_workers(self) -> Iterator[None]:
        """While the loader creates its iterator: workers started now are the loader's."""
        self.started = True
        self.iterating = True
        try:
            yield
        finally:
            self.iterating = False

    def fetching(self) -> None:
        """Before the loader's ``next()``: the DataLoader may request one more batch now
        (until :meth:`delivered`, or :meth:`fetch_failed`). Plain calls, not a context
        manager: this runs once per batch."""
        with self._session.lock:
            self.in_next = True

    def fetch_failed(self) -> None:
        with self._session.lock:
            self.in_next = False

    def delivered(self, batch: Any = None) -> None:
        """One batch reached the trainer: the position moves, hooks see the batch."""
        with self._session.lock:
            self._session.position.delivered()
            self.in_next = False
        if self.hooks:
            for hook in self.hooks:
                hook(batch)

    def take_restart(self) -> bool:
        """Did the domain set change, or a checkpoint load, since the last call (the loader
        needs new readers from the stream's position)?"""
        restart, self.restart = self.restart, False
        return restart

    def freeze_workers(self) -> None:
        """Persistent workers keep the shared buffers: they must not be reallocated."""
        self._session.plan.channel.frozen = True

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """``set_weights`` calls are ignored inside (objects rebuilt while resuming)."""
        self.mute += 1
        try:
            yield
        finally:
            self.mute -= 1


def publish_start_on_iter(loader: Any) -> None:
    """Make a plain ``DataLoader`` publish its dataset's start when an iteration begins.

    Workers read their start when they boot, which may be after the trainer consumed batches of
    the same iteration, so the start cannot be rewritten on every step: the loader's class is
    swapped for a subclass whose ``__iter__`` publishes it first, as MixLoader's does."""
    cls = type(loader)
    if getattr(cls, "_mixstream_bound", False):
        return

    def __iter__(self: Any) -> Any:
        self.dataset.link.begin_iteration()
        return cls.__iter__(self)

    loader.__class__ = type(cls.__name__, (cls,), {"__iter__": __iter__,
                                                   "_mixstream_bound": True})
