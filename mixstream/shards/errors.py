"""Errors raised while writing shards: every message names where (file, line) and the fix."""

from __future__ import annotations

from ..errors import MixstreamError


class ShardError(MixstreamError, ValueError):
    """Bad data or options for the shard writer; the message says what to change."""


class InputError(ShardError):
    """A bad input file or record. ``where`` is ``"path"`` or ``"path:line"``."""

    def __init__(self, where: str, problem: str, fix: str = "") -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        text = f"{where}: {problem}"
        super().__init__(f"{text}; {fix}" if fix else text)

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # picklable across processes
        return (type(self), (self.where, self.problem, self.fix))


class RecordError(InputError):
    """One bad record; ``--skip-bad`` turns these into a reported count."""


SKIP_HINT = "or pass --skip-bad to skip such records (they are counted and reported)"
