"""Reader threads: this rank's batches produced by N reader slots in the trainer's process.

DataLoader worker processes pay for every batch twice over IPC (pickling, shared-memory
handles) and for a process per worker; pyarrow decoding, zstandard and numpy gathers release
the GIL, so on few cores, fast storage or free-threaded Python, threads in the trainer's process
do the same work without either cost. Each thread runs the same reader loop as a worker process
(:func:`mixstream.reading.produce`) as reader slot ``j`` of ``N``, so the plan, the claims,
exactly-once and the checkpoint state are those of ``N`` process workers.

Why threads may not run freely ahead: a weight change is placed at the first batch not yet
requested (``fetched + prefetch depth``, one more while the trainer waits in ``next()``). A
thread starts batch ``t`` only while ``t`` is below that horizon — the same bound the
DataLoader's request queue gives process workers — so a change made from any thread lands at
the same batch on every run. (torchdata's thread mapper has no such bound: fine for a fixed
order, not for a mixture that changes on request.)

How: the trainer's ``next()`` grants, under the stream's lock, one permit per batch that fell
below the horizon to the thread that owns it (batch ``t`` belongs to thread ``t - start mod N``),
and takes batch ``t`` from that thread's queue. One semaphore and one ``SimpleQueue`` per thread:
a first version had every thread and the trainer wait on one condition, woken for every batch,
and spent ~3 µs per sample (2.5x the single-threaded loop) switching between them.

Under the GIL, :class:`InlineReaders` is used instead: the same N slots take turns on the trainer's
thread (batch ``t`` from slot ``t - start mod N``, so the batches are identical) from one walk of
the plan (:func:`~mixstream.reading.produce_in_turn`), and each slot decodes its windows on its
own background thread. Why: assembling a batch is ~84% Python holding the GIL (py-spy, Arrow
shards, 4 domains), so N assembling threads cannot run in parallel, and each hand-off between
them and the trainer cost ~20 µs per batch: 2 threads delivered 0.47x the single-threaded loop.
Decoding (pyarrow, zstd) releases the GIL and stays parallel. :func:`readers` picks the variant.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .reading import ReaderPlan, produce, produce_in_turn

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def gil_enabled() -> bool:
    """False on a free-threaded build running without the GIL (Python 3.13t+)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def readers(plan: ReaderPlan, num_threads: int, start: int, *, lock: Any,
            horizon: Callable[[], int]) -> ThreadedReaders | InlineReaders:
    """Reader slots on their own threads without the GIL, in turn on this thread with it."""
    kind = InlineReaders if gil_enabled() else ThreadedReaders
    return kind(plan, num_threads, start, lock=lock, horizon=horizon)


def _beyond_horizon(t: int, horizon: int) -> RuntimeError:
    return RuntimeError(
        f"batch {t} is beyond the stream's prefetch horizon {horizon}: the position moved under "
        f"a running iteration (load_state_dict?); start a new iteration (iter(loader)) after "
        f"loading a checkpoint")


class _Readers:
    """What both variants share: ``N`` reader slots from batch ``start``, the session's lock
    and its horizon, iteration and closing."""

    def __init__(self, num_threads: int, start: int, lock: Any, horizon: Callable[[], int]):
        self.n = num_threads
        self.start = self.next_t = start
        self._lock = lock
        self._horizon = horizon
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass


class InlineReaders(_Readers):
    """Iterator over this rank's batches from ``start``: ``N`` reader slots taking turns on the
    calling thread, each decoding its next windows on a background thread of its own. The
    batches, claims and state are those of :class:`ThreadedReaders` (and of ``N`` process
    workers): the claim book's bookkeeping of a batch is the same whichever slot walks it, so
    one walk serves all slots. Batch ``t`` is assembled when the trainer asks for it, so it is
    always below the horizon."""

    def __init__(self, plan: ReaderPlan, num_threads: int, start: int, *, lock: Any,
                 horizon: Callable[[], int]):
        super().__init__(num_threads, start, lock, horizon)
        self._gen = produce_in_turn(plan, num_threads)

    def __next__(self) -> Any:
        t = self.next_t
        if self._closed:
            raise StopIteration
        with self._lock:
            h = self._horizon()
        if h <= t:
            self.close()
            raise _beyond_horizon(t, h)
        try:
            batch = next(self._gen)
        except BaseException:  # (StopIteration in stop mode: every earlier batch came)
            self.close()
            raise
        self.next_t = t + 1
        return batch

    def close(self) -> None:
        super().close()
        self._gen.close()


class ThreadedReaders(_Readers):
    """Iterator over this rank's batches from ``start``, made by ``N`` threads.

    ``lock`` is the session's lock and ``horizon()`` (called under it) the first batch the
    trainer cannot have requested yet: a thread starts batch ``t`` only below it."""

    def __init__(self, plan: ReaderPlan, num_threads: int, start: int, *, lock: Any,
                 horizon: Callable[[], int]):
        super().__init__(num_threads, start, lock, horizon)
        self._granted = start
        self._permits = [threading.Semaphore(0) for _ in range(num_threads)]
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(num_threads)]
        with lock:
            self._grant()
        self._threads = [threading.Thread(target=self._run, args=(plan, j),
                                          name=f"mixstream-reader-{j}", daemon=True)
                         for j in range(num_threads)]
        for th in self._threads:
            th.start()

    def _grant(self) -> None:
        """Permits for the batches below the horizon (call with the lock held)."""
        horizon = self._horizon()
        while self._granted < horizon:
            self._permits[(self._granted - self.start) % self.n].release()
            self._granted += 1

    def _run(self, plan: ReaderPlan, j: int) -> None:
        gen = produce(plan, j, self.n)
        out = self._queues[j]
        try:
            while True:
                self._permits[j].acquire()
                if self._closed:
                    return
                batch = next(gen, _DONE)
                out.put(batch)
                if batch is _DONE:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the trainer's thread
            out.put(_Failed(e))
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    def __next__(self) -> Any:
        t = self.next_t
        if self._closed:
            raise StopIteration
        with self._lock:  # the horizon moved: the trainer is in next() / delivered a batch
            self._grant()
            if self._granted <= t:
                self.close()
                raise _beyond_horizon(t, self._granted)
        j = (t - self.start) % self.n
        while True:
            try:
                batch = self._queues[j].get(timeout=1.0)
                break
            except queue.Empty:
                if not self._threads[j].is_alive():  # (it posts its errors; this is a bug)
                    self.close()
                    raise RuntimeError(f"reader thread {j} ended without batch {t}") from None
        if batch is _DONE:  # stop mode: the owner of batch t ended; every earlier one came
            self.close()
            raise StopIteration
        if isinstance(batch, _Failed):
            self.close()
            raise batch.error
        self.next_t = t + 1
        return batch

    def close(self) -> None:
        super().close()
        for permit in self._permits:  # wake threads waiting for a permit: they exit
            permit.release()
