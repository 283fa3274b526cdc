"""Observability for mixing runs: weight changes, realised counts, per-domain loss (EMA).

:class:`MixLogger` is the observer a controller reports to (``ODM(stream, observer=log)``).
It writes JSON lines (one record per line) and/or calls hooks with each record, e.g. for
TensorBoard or W&B::

    log = MixLogger("run.jsonl", hooks=[lambda r: wandb.log(flatten(r), step=r["step"])])

Records (``"event"`` field):

* ``weights``: ``{"step", "from_sample", "kind", "weights": {domain: w}}`` on every change;
* ``step`` (every ``log_every`` steps): ``{"step", "samples", "counts": {domain: n}`` (realised
  sequences since the previous record), ``"loss": {domain: mean}`` (token-weighted mean over
  the same steps, present domains only), ``"loss_ema": {domain: ema}}``;
* ``validation``: ``{"step", "loss": {domain: loss}}``.

Only rank 0 writes under torch.distributed (all ranks see identical, all-reduced numbers).
``mixstream plot run.jsonl -o mix.png`` draws a file like this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch.distributed as dist

from .feedback import StepFeedback

Hook = Callable[[dict], Any]


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def flatten(record: Mapping[str, Any], sep: str = "/") -> dict[str, float]:
    """Numeric leaves of a record as ``{"weights/web": 0.5, ...}`` (for TensorBoard/W&B)."""
    out: dict[str, float] = {}
    prefix = str(record.get("event", ""))
    for key, val in record.items():
        if key in ("event", "step"):
            continue
        if isinstance(val, Mapping):
            for sub, v in val.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{prefix}{sep}{key}{sep}{sub}" if prefix else f"{key}{sep}{sub}"] = float(v)
        elif isinstance(val, (int, float)) and not isinstance(val, bool):
            out[f"{prefix}{sep}{key}" if prefix else key] = float(val)
    return out


def tensorboard_hook(writer: Any) -> Hook:
    """A hook writing every numeric field with ``writer.add_scalar`` (SummaryWriter-like)."""
    def hook(record: dict) -> None:
        for tag, v in flatten(record).items():
            writer.add_scalar(tag, v, record["step"])
    return hook


class MixLogger:
    """Observer for controllers: JSONL file and/or hooks; keeps a per-domain loss EMA."""

    def __init__(self, path: str | Path | None = None, *, hooks: Sequence[Hook] = (),
                 log_every: int = 1, ema: float = 0.9, all_ranks: bool = False,
                 append: bool = True) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        if not 0 <= ema < 1:
            raise ValueError(f"ema decay must be in [0, 1), got {ema}")
        self.path = None if path is None else Path(path)
        self.hooks = list(hooks)
        self.log_every, self.ema = int(log_every), float(ema)
        self.active = all_ranks or _rank() == 0
        self._append = append
        self._fh: TextIO | None = None
        self.loss_ema: dict[str, float] = {}
        self._counts: np.ndarray | None = None
        self._tok: np.ndarray | None = None
        self._tok_loss: np.ndarray | None = None
        self._pending = 0
        self.records = 0

    # ------------------------------------------------------------ observer API
    def on_step(self, step: int, consumed_samples: int, domains: Sequence[str],
                fb: StepFeedback) -> None:
        k = len(domains)
        if self._counts is None or len(self._counts) != k:
            self._counts, self._tok, self._tok_loss = np.zeros(k), np.zeros(k), np.zeros(k)
        assert self._tok is not None and self._tok_loss is not None
        self._counts += fb.counts
        if fb.has_loss:
            self._tok += fb.tokens
            self._tok_loss += fb.tok_loss_sum
            mean = fb.tok_mean
            for d, m in zip(domains, mean, strict=True):
                if not math.isnan(m):
                    m = float(m)  # plain float: checkpoints load with weights_only=True
                    old = self.loss_ema.get(d)
                    self.loss_ema[d] = m if old is None else self.ema * old + (1 - self.ema) * m
        self._pending += 1
        if self._pending >= self.log_every:
            loss = {d: float(s / t) for d, s, t in zip(domains, self._tok_loss, self._tok, strict=True) if t > 0}
            self.emit({"event": "step", "step": int(step), "samples": int(consumed_samples),
                       "counts": {d: int(c) for d, c in zip(domains, self._counts, strict=True)},
                       "loss": loss, "loss_ema": dict(self.loss_ema)})
            self._counts[:], self._tok[:], self._tok_loss[:] = 0, 0, 0
            self._pending = 0

    def on_weights(self, step: int, from_sample: int, weights: Mapping[str, float],
                   kind: str = "sampling") -> None:
        self.emit({"event": "weights", "step": int(step), "from_sample": int(from_sample),
                   "kind": kind, "weights": {d: float(w) for d, w in weights.items()}})

    def on_validation(self, step: int, losses: Mapping[str, float]) -> None:
        self.emit({"event": "validation", "step": int(step),
                   "loss": {d: float(v) for d, v in losses.items()}})

    # ----------------------------------------------------------------- output
    def emit(self, record: dict) -> None:
        """Write one record (rank 0 only unless ``all_ranks``) and call the hooks."""
        if not self.active:
            return
        self.records += 1
        if self.path is not None:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a" if self._append else "w", encoding="utf-8")
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._fh.flush()
        for hook in self.hooks:
            hook(record)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> MixLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Plain Python only (``torch.load(weights_only=True)`` loads it): the loss EMAs and
        the partial ``log_every`` interval, so a resumed run writes the same records."""
        interval = None
        if self._counts is not None and self._tok is not None and self._tok_loss is not None:
            interval = {"counts": self._counts.tolist(), "tokens": self._tok.tolist(),
                        "tok_loss": self._tok_loss.tolist(), "steps": int(self._pending)}
        return {"loss_ema": {str(k): float(v) for k, v in self.loss_ema.items()},
                "interval": interval}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss_ema = {str(k): float(v) for k, v in state.get("loss_ema", {}).items()}
        interval = state.get("interval")
        if interval is None:  # (also a checkpoint from before the interval was saved)
            self._counts = self._tok = self._tok_loss = None
            self._pending = 0
            return
        self._counts = np.asarray(interval["counts"], dtype=np.float64)
        self._tok = np.asarray(interval["tokens"], dtype=np.float64)
        self._tok_loss = np.asarray(interval["tok_loss"], dtype=np.float64)
        self._pending = int(interval["steps"])


def read_log(path: str | Path) -> list[dict]:
    """All records of a JSONL log; raises ValueError naming the line of a corrupt record."""
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not a JSON record ({e.msg})") from None
    return out


def records(path: str | Path, event: str) -> Iterable[dict]:
    return (r for r in read_log(path) if r.get("event") == event)
