"""Where the trainer is: batches fetched, batches trained on, and the plan walked to there.

Two counts matter (see :mod:`mixstream.loader`): batches *fetched* place weight changes, batches
*trained on* are the checkpoint position. The :class:`~mixstream.tracker.PositionTracker` walks
the plan (domain ids and claims only, no data) to the trained position when a checkpoint or an
iteration start needs it, so nothing is replayed.

A position that has delivered nothing since the last bind or load is *fresh*: the rank and
world size may still change under it (a trainer that creates its process group after the
stream), and a loaded checkpoint is then re-applied under the true topology (``loaded``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .plan.claims import ClaimBook
from .plan.mixture import MixCheckpoint
from .tracker import PositionTracker


@dataclass
class Resume:
    """A loaded checkpoint waiting for the loader topology (bind) to become a tracker."""

    batch_size: int
    num_workers: int
    world_size: int
    mix: MixCheckpoint
    claims: ClaimBook  # never walked: a replay under another topology needs the original

    def claim_book(self) -> ClaimBook:
        """A copy the tracker may walk."""
        return ClaimBook(self.claims.geometry, self.claims.num_slots, self.claims.arrays())


class Position:
    """Fetched and trained counts, the tracker, and the loaded checkpoint while fresh."""

    def __init__(self) -> None:
        self.consumed = 0  # batches fetched from the loader (drives weight placement)
        self.trained: int | None = None  # batches trained on, when a trainer says so
        self.tracker: PositionTracker | None = None
        self.resume: Resume | None = None  # a loaded checkpoint awaiting the tracker
        self.loaded: tuple[Resume, int] | None = None  # (checkpoint, position) while fresh
        self.fresh = True  # nothing delivered since the last bind/load: the topology may move

    @property
    def trained_batches(self) -> int:
        return self.consumed if self.trained is None else self.trained

    @property
    def floor(self) -> int:
        """The earliest position still reachable: the tracker never walks back."""
        return 0 if self.tracker is None else self.tracker.batch

    def set_consumed(self, value: int) -> None:
        if value < self.floor:
            raise ValueError(f"consumed_batches cannot go back from {self.floor} to {value}; "
                             f"load a checkpoint instead")
        self.consumed, self.trained = value, None
        if value > 0:
            self.fresh, self.loaded = False, None

    def set_trained(self, value: int) -> None:
        if not self.floor <= value <= self.consumed:
            raise ValueError(f"trained_batches={value} must be between the last checkpoint "
                             f"position {self.floor} and the batches fetched {self.consumed}")
        self.trained = value

    def delivered(self) -> None:
        self.consumed += 1
        if self.fresh:
            self.fresh, self.loaded = False, None

    def load(self, resume: Resume, consumed: int) -> None:
        self.resume = resume
        self.consumed, self.trained = consumed, None
        self.loaded, self.fresh = (resume, consumed), True

    def replay_load(self) -> None:
        """The topology moved while fresh: start over from the loaded checkpoint (or zero)."""
        if self.loaded is not None:
            self.resume, self.consumed = self.loaded
        elif self.tracker is not None and self.tracker.batch == 0:
            self.consumed = 0
        self.trained = None

    def get_state(self) -> dict[str, Any]:
        assert self.tracker is not None
        return {"consumed_batches": self.tracker.batch}
