"""Run work units in-process or in spawned worker processes, reporting progress.

Workers get the settings once (pool initializer) and report (documents, tokens, bytes) through
a queue; results come back to the caller as each unit finishes, in any order (outputs do not
depend on it). With several workers each tokenizer runs on one thread.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from .inputs import WorkUnit
from .progress import Progress
from .unit import ConvertSettings, run_unit

_WORKER: dict[str, Any] = {}
UnitFn = Callable[[WorkUnit, ConvertSettings, Any], Any]  # run_unit, select_unit


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` dies, even by SIGKILL.

    A killed parent runs no cleanup, and spawned pool workers block forever on a task queue
    they hold both ends of (each one ~150 MB with a tokenizer). On Linux the kernel sends
    SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread
    polls the parent pid. Either way a parent that died before this call is caught by the
    pid check.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        except (OSError, AttributeError):
            _watch_parent(parent)
    else:
        _watch_parent(parent)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _watch_parent(parent: int, interval: float = 1.0) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="mixstream-parent-watch", daemon=True).start()


def _init_worker(settings: ConvertSettings, queue: Any, parent: int, fn: UnitFn) -> None:
    die_with_parent(parent)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process
    _WORKER.update(settings=settings, queue=queue, fn=fn)


def _work(unit: WorkUnit) -> Any:
    queue = _WORKER["queue"]
    return _WORKER["fn"](unit, _WORKER["settings"], lambda d, t, b: queue.put((d, t, b)))


def _drain(queue: Any, progress: Progress) -> None:
    while not queue.empty():
        try:
            progress.update(*queue.get_nowait())
        except queue_mod.Empty:  # empty() is only a hint
            return


def run_units(units: list[WorkUnit], s: ConvertSettings, workers: int, progress: Progress,
              done: Callable[[WorkUnit, Any], None], fn: UnitFn | None = None) -> None:
    """Run ``fn`` (default: :func:`run_unit`, convert) on ``units``; ``done(unit, result)`` is
    called in this process as each one finishes."""
    fn = fn or run_unit
    if workers == 1 or len(units) <= 1:
        for unit in units:
            done(unit, fn(unit, s, progress.update))
            progress.unit_done()
        return
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    pool = ProcessPoolExecutor(min(workers, len(units)), mp_context=ctx,
                               initializer=_init_worker, initargs=(s, queue, os.getpid(), fn))
    futures: dict[Future[Any], WorkUnit] = {pool.submit(_work, u): u for u in units}
    try:
        while futures:
            finished, _ = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for f in finished:
                unit = futures.pop(f)
                done(unit, f.result())
                progress.unit_done()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _drain(queue, progress)
