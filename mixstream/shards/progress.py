"""Conversion progress: a tqdm bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm


def _si(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}" if unit else f"{int(n)}"
        n /= 1000
    return f"{n:.1f}P"


class Progress:
    """Counts documents, tokens and input bytes (on disk) over ``total_bytes``.

    ``mode``: ``"bar"`` (tqdm), ``"log"`` (a line every ``interval`` seconds), ``"off"``, or
    ``"auto"`` (bar when ``stream`` is a terminal, else log).
    """

    def __init__(self, total_bytes: int, total_units: int, *, done_bytes: int = 0,
                 done_units: int = 0, mode: str = "auto", stream: IO[str] | None = None,
                 interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        if mode not in ("bar", "log", "off"):
            raise ValueError(f"progress mode {mode!r}: use auto, bar, log or off")
        self.mode, self.interval = mode, interval
        self.total_bytes, self.total_units = total_bytes, total_units
        self.docs = self.tokens = 0
        self.bytes, self.units = done_bytes, done_units
        self._start_bytes = done_bytes
        self.t0 = self._last = time.perf_counter()
        self._bar: Any = None
        if mode == "bar":
            self._bar = tqdm(total=total_bytes, initial=done_bytes, unit="B", unit_scale=True,
                             unit_divisor=1000, desc="convert", file=self.stream,
                             dynamic_ncols=True)
            self._postfix()

    def update(self, docs: int = 0, tokens: int = 0, nbytes: int = 0) -> None:
        self.docs += docs
        self.tokens += tokens
        self.bytes += nbytes
        if self._bar is not None:
            self._bar.update(nbytes)
            self._postfix()
        elif self.mode == "log" and time.perf_counter() - self._last >= self.interval:
            self.log()

    def unit_done(self, nbytes_left: int = 0) -> None:
        self.units += 1
        self.update(nbytes=nbytes_left)

    def _postfix(self) -> None:
        self._bar.set_postfix_str(f"docs={_si(self.docs)} tokens={_si(self.tokens)} "
                                  f"units={self.units}/{self.total_units}", refresh=False)

    def line(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        mb = (self.bytes - self._start_bytes) / 1e6
        return (f"mixstream-shard: {self.docs:,} docs, {_si(self.tokens)} tokens, "
                f"{self.bytes / 1e6:,.1f}/{self.total_bytes / 1e6:,.1f} MB "
                f"({mb / dt:.2f} MB/s), units {self.units}/{self.total_units}, {dt:.0f} s")

    def log(self) -> None:
        self._last = time.perf_counter()
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self.log()
