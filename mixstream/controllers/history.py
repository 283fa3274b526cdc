"""A growable per-step table (rows of K values) with a compact, exact, JSON-able state."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt


class History:
    """Append-only ``[T, K]`` array with amortised O(K) appends (capacity doubling)."""

    def __init__(self, k: int, dtype: npt.DTypeLike) -> None:
        self.k = k
        self.dtype = np.dtype(dtype)
        self._buf = np.zeros((64, k), dtype=self.dtype)
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append(self, row: np.ndarray) -> None:
        if self.rows == len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
        self._buf[self.rows] = row
        self.rows += 1

    @property
    def array(self) -> np.ndarray:
        """A read-only view of the ``rows`` rows so far."""
        view = self._buf[: self.rows]
        view.flags.writeable = False
        return view

    def last(self) -> np.ndarray:
        return self._buf[self.rows - 1].copy()

    def state_dict(self) -> dict[str, Any]:
        data = np.ascontiguousarray(self._buf[: self.rows]).astype(self.dtype.newbyteorder("<"))
        return {"dtype": self.dtype.str.lstrip("<>|="), "k": self.k, "rows": self.rows,
                "b64": base64.b64encode(data.tobytes()).decode("ascii")}

    @staticmethod
    def from_state(state: Mapping[str, Any]) -> History:
        h = History(int(state["k"]), state["dtype"])
        raw = np.frombuffer(base64.b64decode(state["b64"]), dtype=h.dtype.newbyteorder("<"))
        rows = int(state["rows"])
        h._buf = np.zeros((max(64, rows), h.k), dtype=h.dtype)
        h._buf[:rows] = raw.reshape(rows, h.k)
        h.rows = rows
        return h
