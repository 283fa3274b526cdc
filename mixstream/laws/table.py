"""The (mixture, loss) table that mixing laws are fitted on, and its CSV format.

CSV format (one row per evaluated checkpoint; ``#`` lines are comments)::

    run,model_size,step,r_web,r_code,loss_web,loss_code,loss_books
    a,70M,10000,0.75,0.25,3.10,1.95,3.40

* ``r_<domain>`` — proportion of training domain ``<domain>`` in the run's mixture (>= 0; a
  row must sum to 1 within 1e-3 and is renormalised). At least two such columns.
* ``loss_<domain>`` — validation loss on ``<domain>`` (finite, > 0). At least one. Validation
  domains need not be training domains.
* ``step`` (optional) — training step of the checkpoint (integer > 0).
* ``model_size`` (optional) — parameter count (> 0): a number (``18915328``, ``1.2e9``) or one
  with a suffix ``K``/``M``/``B``/``T`` (``70M``, ``1.4B``). The Data Mixing Laws code uses
  non-embedding parameter counts.
* ``run`` (optional) — a free-text label, ignored by the fits.

Any other column, a missing value, a duplicated (mixture, step, model_size) triple or a bad
number raises :class:`TableError` naming the file, line and column.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

R_PREFIX, LOSS_PREFIX = "r_", "loss_"
OPTIONAL_COLUMNS = ("run", "step", "model_size")
SUM_TOLERANCE = 1e-3
_SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


class TableError(ValueError):
    """Bad mixing-law table: names the file, the line and the column, and the fix."""


@dataclass(frozen=True)
class LawTable:
    """Mixtures ``[N, M]`` over ``train_domains`` and losses ``[N, K]`` over ``val_domains``."""

    train_domains: tuple[str, ...]
    val_domains: tuple[str, ...]
    mixtures: np.ndarray
    losses: np.ndarray
    steps: np.ndarray | None = None  # [N] int64
    sizes: np.ndarray | None = None  # [N] float64
    source: str = "<table>"
    spread: np.ndarray | None = None  # [N, K] max - min of extrapolated losses over restarts

    def __len__(self) -> int:
        return int(self.mixtures.shape[0])

    def take(self, mask: np.ndarray) -> LawTable:
        """The rows where ``mask`` is true."""
        return replace(
            self, mixtures=self.mixtures[mask], losses=self.losses[mask],
            steps=None if self.steps is None else self.steps[mask],
            sizes=None if self.sizes is None else self.sizes[mask],
            spread=None if self.spread is None else self.spread[mask])

    def select(self, step: int | None = None, size: float | None = None) -> LawTable:
        """Rows at one ``step`` and/or one model ``size``; raises if none match."""
        mask = np.ones(len(self), dtype=bool)
        for name, want, col in (("step", step, self.steps), ("model_size", size, self.sizes)):
            if want is None:
                continue
            if col is None:
                raise TableError(f"{self.source}: no '{name}' column to select {name}={want} from")
            mask &= np.isclose(col, want, rtol=1e-9, atol=0)
            if not mask.any():
                raise TableError(f"{self.source}: no rows with {name}={want}; present: "
                                 f"{sorted(set(col.tolist()))}")
        return self.take(mask)


def parse_size(text: str) -> float:
    """``'70M'`` -> 7e7, ``'1.4B'`` -> 1.4e9, ``'18915328'`` -> 18915328.0."""
    s = text.strip()
    mult = 1.0
    if s and s[-1].upper() in _SUFFIXES:
        mult, s = _SUFFIXES[s[-1].upper()], s[:-1]
    return float(s) * mult


def _number(text: str, where: str, what: str) -> float:
    try:
        v = parse_size(text) if what == "model_size" else float(text)
    except ValueError:
        raise TableError(f"{where}: {text!r} is not a number; write {_EXPECT[what]}") from None
    if not math.isfinite(v):
        raise TableError(f"{where}: {text!r} is not finite; write {_EXPECT[what]}")
    return v


_EXPECT = {
    "r": "a proportion >= 0",
    "loss": "a finite loss > 0",
    "step": "an integer step > 0",
    "model_size": "a parameter count > 0 such as 18915328 or 70M",
}


def parse_table(text: str, source: str = "<table>") -> LawTable:
    """Parse CSV text in the format of this module's docstring."""
    text = text.removeprefix("\ufeff")  # byte-order mark (Excel's "CSV UTF-8")
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines())
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise TableError(f"{source}: empty table; expected a header such as "
                         f"'r_web,r_code,loss_web' and one row per run")
    header_no, header_line = lines[0]
    header = [h.strip() for h in next(csv.reader([header_line]))]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise TableError(f"{source} line {header_no}: column {name!r} appears twice")
        seen.add(name)
        ok = (name in OPTIONAL_COLUMNS or
              (name.startswith(R_PREFIX) and len(name) > len(R_PREFIX)) or
              (name.startswith(LOSS_PREFIX) and len(name) > len(LOSS_PREFIX)))
        if not ok:
            raise TableError(f"{source} line {header_no}: column {name!r} is not recognised; "
                             f"columns are r_<domain>, loss_<domain>, step, model_size, run")
    r_cols = [h for h in header if h.startswith(R_PREFIX)]
    l_cols = [h for h in header if h.startswith(LOSS_PREFIX)]
    if len(r_cols) < 2:
        raise TableError(f"{source} line {header_no}: need >= 2 proportion columns named "
                         f"r_<domain>, found {r_cols}")
    if not l_cols:
        raise TableError(f"{source} line {header_no}: need >= 1 loss column named loss_<domain>")
    col = {h: i for i, h in enumerate(header)}
    mixtures, losses, steps, sizes, line_nos = [], [], [], [], []
    for line_no, raw in lines[1:]:
        cells = [c.strip() for c in next(csv.reader([raw]))]
        if len(cells) != len(header):
            raise TableError(f"{source} line {line_no}: {len(cells)} cells for {len(header)} "
                             f"columns {header}")
        for h, cell in zip(header, cells):
            if cell == "" and h != "run":
                raise TableError(f"{source} line {line_no}, column {h!r}: empty cell; every "
                                 f"row needs a value in every column")
        at = f"{source} line {line_no}, column"
        r = np.array([_number(cells[col[h]], f"{at} {h!r}", "r") for h in r_cols])
        for h, v in zip(r_cols, r):
            if v < 0:
                raise TableError(f"{at} {h!r}: proportion {v} is negative")
        if abs(r.sum() - 1.0) > SUM_TOLERANCE:
            raise TableError(f"{source} line {line_no}: proportions {'+'.join(r_cols)} sum to "
                             f"{r.sum():.6g}; they must sum to 1 (±{SUM_TOLERANCE})")
        loss = np.array([_number(cells[col[h]], f"{at} {h!r}", "loss") for h in l_cols])
        for h, v in zip(l_cols, loss):
            if v <= 0:
                raise TableError(f"{at} {h!r}: loss {v} must be > 0")
        mixtures.append(r / r.sum())
        losses.append(loss)
        line_nos.append(line_no)
        if "step" in col:
            s = _number(cells[col["step"]], f"{at} 'step'", "step")
            if s <= 0 or s != int(s):
                raise TableError(f"{at} 'step': {cells[col['step']]!r}; write {_EXPECT['step']}")
            steps.append(int(s))
        if "model_size" in col:
            z = _number(cells[col["model_size"]], f"{at} 'model_size'", "model_size")
            if z <= 0:
                raise TableError(f"{at} 'model_size': {z} must be > 0")
            sizes.append(z)
    if not mixtures:
        raise TableError(f"{source}: header but no data rows")
    table = LawTable(
        train_domains=tuple(h[len(R_PREFIX):] for h in r_cols),
        val_domains=tuple(h[len(LOSS_PREFIX):] for h in l_cols),
        mixtures=np.array(mixtures), losses=np.array(losses),
        steps=np.array(steps, dtype=np.int64) if "step" in col else None,
        sizes=np.array(sizes, dtype=np.float64) if "model_size" in col else None,
        source=source)
    _check_duplicates(table, line_nos)
    return table


def _check_duplicates(table: LawTable, line_nos: Sequence[int]) -> None:
    first: dict[tuple, int] = {}
    for i, line_no in enumerate(line_nos):
        key = (tuple(np.round(table.mixtures[i], 9)),
               None if table.steps is None else int(table.steps[i]),
               None if table.sizes is None else float(table.sizes[i]))
        if key in first:
            raise TableError(f"{table.source} lines {first[key]} and {line_no}: same mixture, "
                             f"step and model_size twice; keep one row per checkpoint (average "
                             f"repeated seeds first)")
        first[key] = line_no


def read_table(path: str | os.PathLike) -> LawTable:
    """Read a CSV table (see the module docstring for the format)."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is skipped
            text = f.read()
    except OSError as e:
        raise TableError(f"{p}: cannot read the table ({e.strerror})") from None
    return parse_table(text, source=p)


def format_table(table: LawTable) -> str:
    """CSV text for ``table`` (inverse of :func:`parse_table` up to float formatting)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ([] if table.sizes is None else ["model_size"]) + \
           ([] if table.steps is None else ["step"])
    w.writerow(head + [R_PREFIX + d for d in table.train_domains] +
               [LOSS_PREFIX + d for d in table.val_domains])
    for i in range(len(table)):
        meta = ([] if table.sizes is None else [repr(float(table.sizes[i]))]) + \
               ([] if table.steps is None else [str(int(table.steps[i]))])
        w.writerow(meta + [repr(float(v)) for v in table.mixtures[i]] +
                   [repr(float(v)) for v in table.losses[i]])
    return buf.getvalue()
