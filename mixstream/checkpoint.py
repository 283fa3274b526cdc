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


def blocks_digest(block_sizes: np.ndarray) -> str:
    """A short digest of a domain's block sizes: a grown domain keeps the old one as a prefix."""
    import hashlib

    return hashlib.sha256(np.asarray(block_sizes, np.int64).tobytes()).hexdigest()[:16]


def parse_domains(value: Any) -> list[dict[str, Any]]:
    """The checkpoint's domain list: ``[[name, samples, fingerprint, blocks, blocks digest,
    file units, units digest]]``."""
    if not isinstance(value, list) or not value:
        raise ValueError("MixStream checkpoint 'domains' must be a non-empty list")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not isinstance(entry[0], str):
            raise ValueError(f"MixStream checkpoint domains[{i}] is not [name, samples, ...]")
        n = entry[1]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"MixStream checkpoint domains[{i}] has {n!r} samples")
        out.append({"name": entry[0], "samples": n,
                    "fingerprint": entry[2] if len(entry) > 2 else None,
                    "blocks": entry[3] if len(entry) > 3 else None,
                    "digest": entry[4] if len(entry) > 4 else None,
                    "units": entry[5] if len(entry) > 5 else None,
                    "units_digest": entry[6] if len(entry) > 6 else None})
    names = [d["name"] for d in out]
    if len(set(names)) != len(names):
        raise ValueError(f"MixStream checkpoint names a domain twice: {names}")
    return out


def parse_segments(value: list, d: int) -> list[list[tuple[int, int, int]]]:
    """Per domain, its geometry history ``[(first_epoch, num_blocks, window), ...]``."""
    if len(value) != d:
        raise ValueError(f"MixStream checkpoint 'segments' must list {d} domains")
    out = []
    for i, segs in enumerate(value):
        if not isinstance(segs, list) or not segs:
            raise ValueError(f"MixStream checkpoint segments[{i}] is empty")
        parsed = []
        last = -1
        for seg in segs:
            if (not isinstance(seg, (list, tuple)) or len(seg) != 3
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in seg)
                    or seg[0] <= last or seg[1] < 1 or seg[2] < 1):
                raise ValueError(f"MixStream checkpoint segments[{i}] entry {seg!r} is malformed")
            last = seg[0]
            parsed.append((int(seg[0]), int(seg[1]), int(seg[2])))
        if parsed[0][0] != 0:
            raise ValueError(f"MixStream checkpoint segments[{i}] must start at epoch 0")
        out.append(parsed)
    return out


def content_units(sources: list[Any]) -> list[str]:
    """One digest per file-like unit of a domain, in order (each manifest shard, each Parquet
    file, else each source whole): a domain grown by appended shards keeps the old units as a
    prefix, a domain whose old files changed does not."""
    import hashlib
    import json

    def h(x: Any) -> str:
        return hashlib.sha256(json.dumps(x, sort_keys=True, default=repr).encode()).hexdigest()

    out: list[str] = []
    for src in sources:
        parts = src.fingerprint_parts()
        items = parts.get("shards") or parts.get("files")
        if isinstance(items, list) and items:
            head = {k: v for k, v in parts.items() if k not in ("shards", "files")}
            out.extend(h([head, item]) for item in items)
        else:
            out.append(h(parts))
    return out


def units_digest(units: list[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(units).encode()).hexdigest()[:16]
