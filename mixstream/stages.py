"""Stages: one stream following a declared plan — pretrain, mid-train, instruction tuning.

A :class:`StagePlan` holds stages in order; each has a length (optimizer steps = batches this
rank trains on, or tokens over all ranks) and a mixture: fixed ``weights`` (domains left out get
0) or a ``controller`` factory called when the stage starts. The stream must be created with the
union of every stage's domains — a stage switches domains on and off by weight, so one stream,
one weight log and one checkpoint cover the whole run. (Domains unknown when the stream was
created join with :meth:`MixStream.add_domains` or by loading a checkpoint into a stream that
has them.)

Where a stage starts in the data:

* a stage measured in **steps** ends at an exact batch ``E``: its successor's weights are
  placed at ``E`` as soon as the loader's prefetch horizon reaches it, so the data switches at
  batch ``E`` on every run and after every resume;
* a stage measured in **tokens** ends at the first batch whose tokens reach the budget; its
  successor's weights apply from the first batch not yet prefetched then (deterministic, since
  the prefetch depth is fixed).

The active stage's controller is attached to the stream (so trainer integrations find it and
give it ``feedback``); the previous one is detached when a stage ends. It starts receiving
feedback when its stage's weights are placed, i.e. up to the prefetch depth before its first
batch. The plan's state (stage, where it started, tokens, its controller's state) is in the
stream's checkpoint; resume is exact mid-stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stream import MixStream


@dataclass(frozen=True)
class Stage:
    """One stage: ``steps`` or ``tokens`` long (the last stage may have neither: open-ended).

    ``weights`` (by name; absent domains get 0) apply from the stage's first batch; a
    ``controller`` factory (``lambda stream: ODM(stream)``) is called when the stage's weights
    are placed and starts from them (from the weights in force if the stage has none)."""

    name: str
    steps: int | None = None
    tokens: int | None = None
    weights: Mapping[str, float] | None = None
    controller: Callable[[MixStream], Any] | None = None


class StagePlan:
    """Follow ``stages`` with ``stream`` (create it after the MixLoader, before resuming).

    ``token_column``: the column whose non-padding entries count as tokens (``attention_mask``
    when the batch has one). Call :meth:`feedback` like a controller's if your loop feeds the
    controllers itself; trainer integrations feed the attached stage controller directly.
    """

    def __init__(self, stream: MixStream, stages: Sequence[Stage], *,
                 token_column: str = "input_ids"):
        if not stages:
            raise ValueError("a StagePlan needs at least one stage")
        for i, st in enumerate(stages):
            if st.steps is not None and st.tokens is not None:
                raise ValueError(f"stage {st.name!r}: give steps or tokens, not both")
            if st.steps is None and st.tokens is None and i < len(stages) - 1:
                raise ValueError(f"stage {st.name!r} has no length; only the last stage may be "
                                 f"open-ended")
            if (st.steps is not None and st.steps < 1) or (st.tokens is not None and st.tokens < 1):
                raise ValueError(f"stage {st.name!r}: length must be >= 1")
            if st.weights is not None:
                unknown = [n for n in st.weights if n not in stream.domains]
                if unknown:
                    raise ValueError(f"stage {st.name!r} names unknown domain(s) {unknown}; "
                                     f"create the stream with every stage's domains")
        if stream.batch_size is None or stream.consumed_batches or not stream.bound:
            raise ValueError("create the StagePlan after the MixLoader and before the first batch "
                             "(resume with loader.load_state_dict afterwards)")
        self.stream = stream
        self.stages = list(stages)
        self.token_column = token_column
        self.index = 0  # the stage whose weights are placed (in force now or at its start)
        self.start = 0  # the batch where that stage starts (known once placed)
        self.tokens = 0  # tokens trained on in the stage that is training now (token stages)
        self.controller: Any = None
        stream.attach(self, name="stages")
        stream.link.hooks.append(self._on_batch)
        first = self.stages[0]
        if first.weights is not None:
            stream.set_initial_weights(self._vector(first.weights))
        self.controller = self._make_controller(first)

    # -- stage switching --------------------------------------------------------------------
    @property
    def stage(self) -> Stage:
        return self.stages[self.index]

    def _vector(self, weights: Mapping[str, float]) -> dict[str, float]:
        return {n: float(weights.get(n, 0.0)) for n in self.stream.domains}

    def _make_controller(self, stage: Stage, *, muted: bool = False) -> Any:
        if stage.controller is None:
            return None
        with self.stream.link.muted() if muted else contextlib.nullcontext():
            ctrl = stage.controller(self.stream)
        return ctrl

    def _end_batch(self) -> int | None:
        steps = self.stage.steps
        return None if steps is None else self.start + steps

    def _on_batch(self, batch: Any) -> None:
        """After each delivered batch: count tokens, place the next stage when it is due."""
        if self.index + 1 >= len(self.stages):
            return
        stream = self.stream
        if self.stage.tokens is not None:
            self.tokens += self._count_tokens(batch) * stream.world_size
            due = self.tokens >= self.stage.tokens
            at = None
        else:
            at = self._end_batch()
            due = at is not None and stream.consumed_batches + stream.prefetch_depth >= at
        if due:
            self._advance(at)

    def _advance(self, at: int | None) -> None:
        stream = self.stream
        nxt = self.stages[self.index + 1]
        if self.controller is not None:
            stream.detach(self.controller)
        self.index += 1
        self.tokens = 0
        if nxt.weights is not None:
            frm = stream.set_weights(self._vector(nxt.weights), from_batch=at)
        else:
            frm = None
        per_batch = stream.world_size * (stream.batch_size or 1)
        self.start = at if at is not None else (
            frm // per_batch if frm is not None
            else stream.consumed_batches + stream.prefetch_depth)
        self.controller = self._make_controller(nxt)

    def _count_tokens(self, batch: Any) -> int:
        if not isinstance(batch, Mapping):
            return 0
        mask = batch.get("attention_mask")
        if mask is not None:
            return int(mask.sum())
        col = batch.get(self.token_column)
        if col is None:
            return 0
        if isinstance(col, list):
            return int(sum(len(x) for x in col))
        return int(np.prod(col.shape))

    # -- controller passthrough -------------------------------------------------------------
    def feedback(self, *args: Any, **kwargs: Any) -> Any:
        """Forward one step's feedback to the active stage's controller (if it has one)."""
        if self.controller is None:
            return None
        return self.controller.feedback(*args, **kwargs)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stages": [s.name for s in self.stages], "index": self.index,
                "start": self.start, "tokens": self.tokens,
                "controller": None if self.controller is None else type(self.controller).__name__}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state.get("stages", [])) != [s.name for s in self.stages]:
            raise ValueError(f"checkpoint stages {state.get('stages')} != this plan's "
                             f"{[s.name for s in self.stages]}")
        index = int(state["index"])
        if index != self.index:
            if self.controller is not None:
                self.stream.detach(self.controller)
            self.index = index
            # the stream's checkpoint restores the weight log: do not push construction weights
            self.controller = self._make_controller(self.stage, muted=True)
        self.start, self.tokens = int(state["start"]), int(state["tokens"])

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)
