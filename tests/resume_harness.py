"""Reusable save/load-state harness (after torchdata's ``nodes`` test helpers).

``check_resume`` runs a stream uninterrupted, then for each cut point ``k`` runs it again to
``k``, saves ``state_dict()`` (through JSON, so checkpoints are plain data), loads it into a
fresh stream in a fresh loader, and checks that the rest of the run is identical, weight
changes before and after the checkpoint included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import numpy as np

from mixstream import MixLoader, MixStream

Record = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _record(batch: dict) -> Record:
    """What identifies a batch: global indices, domains and sample ids (first row of tokens
    when the data has no id column)."""
    ident = batch["id"] if "id" in batch else [row[:4].tolist() for row in batch["tokens"]]
    return (tuple(batch["index"].tolist()), tuple(batch["domain"].tolist()),
            tuple(map(str, np.asarray(ident).tolist())))


def run(make_stream: Callable[[], MixStream], loader_kwargs: Mapping, total: int,
        changes: Mapping[int, object] | None = None, state: dict | None = None,
        stop_at: int | None = None) -> tuple[list[Record], dict | None]:
    """Run to ``total`` consumed batches (or ``stop_at``, returning the state there)."""
    changes = changes or {}
    stream = make_stream()
    loader = MixLoader(stream, **loader_kwargs)
    if state is not None:
        stream.load_state_dict(state)
    step = stream.consumed_batches
    if stop_at == step:
        return [], json.loads(json.dumps(stream.state_dict()))
    if step in changes and state is not None:
        stream.set_weights(changes[step])  # type: ignore[arg-type]
    out: list[Record] = []
    saved = None
    if step >= total:
        return out, saved
    for batch in loader:
        out.append(_record(batch))
        step += 1
        if step == stop_at:
            saved = json.loads(json.dumps(stream.state_dict()))
            break
        if step in changes:
            stream.set_weights(changes[step])  # type: ignore[arg-type]
        if step >= total:
            break
    return out, saved


def check_resume(make_stream: Callable[[], MixStream], loader_kwargs: Mapping, total: int,
                 cuts: list[int], changes: Mapping[int, object] | None = None) -> list[Record]:
    full, _ = run(make_stream, loader_kwargs, total, changes)
    assert len(full) == total
    for k in cuts:
        _, state = run(make_stream, loader_kwargs, total, changes, stop_at=k)
        assert state is not None
        rest, _ = run(make_stream, loader_kwargs, total, changes, state=state)
        assert rest == full[k:], f"resume at batch {k} diverged"
    return full
