"""Reader threads: this rank's batches produced by N threads in the trainer's process.

DataLoader worker processes pay for every batch twice over IPC (pickling, shared-memory
handles) and for a process per worker; pyarrow decoding, zstandard and numpy gathers release
the GIL, so on few cores, fast storage or free-threaded Python, threads in the trainer's process
do the same work without either cost. Each thread runs the same reader loop as a worker process
(:func:`mixstream.reading.produce`) as reader slot ``j`` of ``N``, so the plan, the claims,
exactly-once and the checkpoint state are those of ``N`` process workers.

Why threads may not run freely ahead: a weight change is placed at the first batch not yet
requested (``fetched + prefetch depth``, one more while the trainer waits in ``next()``). A
thread starts batch ``t`` only while ``t`` is below that horizon — the same bound the
DataLoader's request queue gives process workers — checked under the stream's lock, so a change
made from any thread lands at the same batch on every run. (torchdata's thread mapper has no
such bound: fine for a fixed order, not for a mixture that changes on request.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from .reading import ReaderPlan, produce

_DONE = object()


class ThreadedReaders:
    """Iterator over this rank's batches from ``start``, made by ``N`` threads.

    ``lock`` is the session's lock and ``horizon()`` (called under it) the first batch the
    trainer cannot have requested yet: a thread starts batch ``t`` only below it."""

    def __init__(self, plan: ReaderPlan, num_threads: int, start: int, *, lock: Any,
                 horizon: Callable[[], int]):
        self.n = num_threads
        self.next_t = start
        self._horizon = horizon
        self._cond = threading.Condition(lock)
        self._ready: dict[int, Any] = {}
        self._ended: int | None = None  # the first batch that will never come (stop mode)
        self._error: BaseException | None = None
        self._closed = False
        self._threads = [threading.Thread(target=self._run, args=(plan, j, start),
                                          name=f"mixstream-reader-{j}", daemon=True)
                         for j in range(num_threads)]
        for th in self._threads:
            th.start()

    def _allowed(self, t: int) -> bool:
        return t < self._horizon()

    def _run(self, plan: Any, j: int, start: int) -> None:
        gen = produce(plan, j, self.n)
        t = start + j
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._allowed(t):
                        self._cond.wait(0.5)
                    if self._closed:
                        return
                batch = next(gen, _DONE)
                with self._cond:
                    if batch is _DONE:
                        self._ended = t if self._ended is None else min(self._ended, t)
                        self._cond.notify_all()
                        return
                    self._ready[t] = batch
                    self._cond.notify_all()
                t += self.n
        except BaseException as e:  # noqa: BLE001 - handed to the trainer's thread
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        t = self.next_t
        with self._cond:
            self._cond.notify_all()  # the horizon moved: in next() / a delivered batch
            while t not in self._ready:
                if self._error is not None:
                    self.close()
                    raise self._error
                if self._ended is not None and t >= self._ended:
                    self.close()
                    raise StopIteration
                self._cond.wait(0.5)
            batch = self._ready.pop(t)
        self.next_t = t + 1
        return batch

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass
