"""MixStream checkpoints: plain-Python state, checked before it is trusted.

A checkpoint is loaded by whoever the trainer is (``torch.load(weights_only=True)`` in Lightning
and torch >= 2.6, JSON, ``torch.distributed.checkpoint``), so it holds only dicts, lists, str,
int, float, bool and None. Loading validates the structure (types, lengths, shapes) with errors
naming the key, and the stream then cross-checks the counters against the mixture they claim to
describe (see ``MixStream.load_state_dict``): a hand-edited or rewound checkpoint is an error,
never duplicated data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

STATE_VERSION = 2


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays and tuples turned into plain Python."""
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state holds a {type(obj).__name__} ({obj!r:.60}); state must be "
                    f"plain Python (dict, list, str, int, float, bool, None)")


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value that is not plain Python."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif not (obj is None or type(obj) in (bool, int, float, str)):
        raise TypeError(f"{where} is a {type(obj).__name__}, not plain Python")


def require(state: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in state:
        raise ValueError(f"MixStream checkpoint has no {key!r}; it is not a MixStream state or "
                         f"it was truncated")
    value = state[key]
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        raise ValueError(f"MixStream checkpoint {key!r} is {value!r:.80}, expected "
                         f"{getattr(kind, '__name__', kind)}")
    return value


def int_array(value: Any, shape: tuple[int, ...], key: str) -> np.ndarray:
    """``value`` as an int64 array of ``shape``, or a ValueError naming ``key``."""
    try:
        arr = np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"MixStream checkpoint {key!r} is not an integer array") from None
    if arr.shape != shape:
        raise ValueError(f"MixStream checkpoint {key!r} has shape {arr.shape}, expected {shape} "
                         f"for its topology")
    return arr


def float_list(value: Any, n: int, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"MixStream checkpoint {key!r} is not a list of numbers") from None
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ValueError(f"MixStream checkpoint {key!r} must be {n} finite numbers")
    return arr
