"""Reading a checkpoint back: validate it, match it to this corpus, carry it across domain sets.

A checkpoint is untrusted input (hand-edited, rewound, taken on other data). :func:`restore`
is a pure function of the checkpoint and this stream's corpus and settings: it parses each
component's state with that component's own validation, checks every kept domain against the
checkpoint's (same data, or the same domain grown by appended shards), checks the claim book
against the mixture it claims to describe, and carries the state into this domain set — or
raises, so that loading never repeats or skips data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import (
    STATE_VERSION,
    blocks_digest,
    content_units,
    parse_domains,
    parse_segments,
    require,
    units_digest,
)
from .config import Settings
from .corpus import Corpus, fingerprint
from .plan.claims import LAYOUT, ClaimBook, blank_arrays
from .plan.mixture import MixCheckpoint, MixCursor, rebase
from .plan.order import Geometry, build_geometry
from .plan.rng import domain_key
from .plan.weights import LogEntry, WeightLog
from .position import Resume
from .sources.resolve import Domain
from .walker import SlotLayout


@dataclass
class Restored:
    log: WeightLog
    resume: Resume
    consumed: int
    segments: list[list[tuple[int, int, int]]]
    names: list[str]  # the checkpoint's domain names (differs from ours after a set change)
    attached: dict[str, Any]


def restore(state: Mapping[str, Any], corpus: Corpus, settings: Settings,
            initial_weights: np.ndarray) -> Restored:
    """``state`` checked and carried into ``corpus``; ``initial_weights`` apply from the
    checkpoint's position when the domain set differs."""
    version = state.get("version") if isinstance(state, Mapping) else None
    if version != STATE_VERSION:
        raise ValueError(f"unsupported MixStream state version {version!r} (this mixstream "
                         f"writes version {STATE_VERSION})")
    theirs = parse_domains(require(state, "domains", list))
    for key, value in vars(settings).items():
        if state.get(key) != value:
            raise ValueError(f"checkpoint has {key}={state.get(key)!r} but this stream has "
                             f"{value!r}; create the stream with the same settings")
    d = len(theirs)
    names = [x["name"] for x in theirs]
    segments = parse_segments(require(state, "segments", list), d)
    bsz = require(state, "batch_size", int)
    nw = require(state, "num_workers", int)
    world = require(state, "world_size", int)
    consumed = require(state, "consumed_batches", int)
    if bsz < 1 or nw < 0 or world < 1 or consumed < 0:
        raise ValueError(f"MixStream checkpoint has batch_size={bsz}, num_workers={nw}, "
                         f"world_size={world}, consumed_batches={consumed}")
    digest = str(state.get("weight_digest", ""))
    log = WeightLog.from_state(require(state, "weight_log", list), d, digest=digest)
    mix = MixCheckpoint.from_state(require(state, "mix", dict), d)
    old = SlotLayout(bsz, world, nw)
    arrays = ClaimBook.parse_state(require(state, "claims", dict), d, old.num_slots)
    attached = dict(require(state, "attached", dict))
    # -- this corpus against the checkpoint's, by name ----------------------------------------
    mine = {name: j for j, name in enumerate(corpus.names)}
    old_geo: list[Geometry | None] = []
    kept: dict[int, Geometry] = {}  # this corpus's domains whose geometry did not change
    new_segments = [[(0, len(dom.block_sizes), w)] for dom, w in zip(corpus.domains,
                                                                     corpus.windows)]
    for i, x in enumerate(theirs):
        j = mine.get(x["name"])
        if j is None:
            old_geo.append(None)  # retired
            continue
        dom = corpus.domains[j]
        grown = check_domain(dom, x)
        geo = build_geometry(dom.block_sizes, segments[i], seed=settings.seed,
                             domain=domain_key(dom.name), shuffle=settings.shuffle)
        old_geo.append(geo)
        segs = list(segments[i])
        if grown:  # the new shards join at the domain's next epoch not yet started
            claimed = int(arrays["claimed"][i])
            start = 0 if claimed == 0 else geo.epoch_of(claimed - 1) + 1
            segs = [sg for sg in segs if sg[0] < start] + [
                (start, len(dom.block_sizes), corpus.windows[j])]
        elif segs[-1][2] != corpus.windows[j]:
            raise ValueError(f"checkpoint has window {segs[-1][2]} for domain {dom.name!r} but "
                             f"this stream has {corpus.windows[j]}; create the stream with "
                             f"the same shuffle_window / memory_budget")
        else:
            kept[j] = geo
        new_segments[j] = segs
    pos = consumed * old.world_size * old.batch_size
    cursor = MixCursor(settings.seed, settings.mix_block, mix, log.after(mix.chunk_start))
    if mix.chunk_start > pos:
        raise ValueError(f"MixStream checkpoint is inconsistent: mixture at sample "
                         f"{mix.chunk_start} but position {pos}")
    _check_claims(old_geo, old.num_slots, arrays, cursor.counts_at(pos), consumed, names)
    if names != corpus.names:
        log, mix, arrays = carry(names, corpus.names, cursor, pos, arrays, initial_weights,
                                 digest)
    geometry = [kept[j] if j in kept else build_geometry(
        dom.block_sizes, segs, seed=settings.seed, domain=domain_key(dom.name),
        shuffle=settings.shuffle) for j, (dom, segs) in enumerate(zip(corpus.domains,
                                                                     new_segments))]
    claims = ClaimBook(geometry, old.num_slots, arrays)
    return Restored(log=log, resume=Resume(bsz, nw, world, mix, claims), consumed=consumed,
                    segments=new_segments, names=names, attached=attached)


def _check_claims(geometry: list[Geometry | None], slots: int, arrays: dict[str, np.ndarray],
                  realised: np.ndarray, consumed: int, names: list[str]) -> None:
    """The claim book must have served exactly what the mixture assigns up to the position."""
    for i, geo in enumerate(geometry):
        if geo is None:
            continue
        book = ClaimBook([geo], slots, {k: v[i : i + 1] if v.ndim == 1 else v[:, i : i + 1]
                                        for k, v in arrays.items()})
        served = int(book.served()[0])
        if served != int(realised[i]):
            raise ValueError(
                f"MixStream checkpoint is inconsistent: at batch {consumed} the mixture assigns "
                f"{int(realised[i])} samples of domain {names[i]!r} but the claim book served "
                f"{served}; the checkpoint was edited or its counters rewound (loading it "
                f"would repeat or skip data)")


def check_domain(dom: Domain, theirs: dict[str, Any]) -> bool:
    """Is ``dom`` the checkpoint's domain (False) or the same one grown (True)? Else raise."""
    blocks, digest = theirs["blocks"], theirs["digest"]
    if theirs["samples"] == dom.num_samples:
        fp, now = theirs["fingerprint"], fingerprint(dom)
        if fp is not None and now is not None and fp != now:
            raise ValueError(f"domain {dom.name!r}: the checkpoint was taken on other data "
                             f"(corpus fingerprint {fp} != {now}); its shards changed")
        if digest is not None and digest != blocks_digest(dom.block_sizes):
            raise ValueError(f"domain {dom.name!r}: its blocks differ from the checkpoint's")
        return False
    grown = (isinstance(blocks, int) and digest is not None
             and theirs["samples"] < dom.num_samples and blocks < len(dom.block_sizes)
             and blocks_digest(dom.block_sizes[:blocks]) == digest)
    n_units, units = theirs.get("units"), theirs.get("units_digest")
    if grown and isinstance(n_units, int) and units is not None:  # the old files unchanged
        mine = content_units(dom.sources)
        grown = n_units <= len(mine) and units_digest(mine[:n_units]) == units
    if not grown:
        raise ValueError(
            f"domain {dom.name!r} has {dom.num_samples} samples but the checkpoint's had "
            f"{theirs['samples']}; a domain may only grow by shards appended after its old "
            f"ones (then the new shards join at its next epoch)")
    return True


def carry(names: list[str], ours: list[str], cursor: MixCursor, pos: int,
          arrays: dict[str, np.ndarray], w: np.ndarray, digest: str
          ) -> tuple[WeightLog, MixCheckpoint, dict[str, np.ndarray]]:
    """Carry the checkpoint's state (domains ``names``) into domains ``ours`` at sample
    ``pos``: kept domains keep their counts, targets and claims; new ones start fresh; retired
    ones are dropped; weights ``w`` apply from ``pos``."""
    index = [names.index(n) if n in names else -1 for n in ours]
    counts_old, targets_old = cursor.counts_at(pos), cursor.targets_at(pos)

    def pick(values: np.ndarray, fill: float) -> np.ndarray:
        return np.array([values[i] if i >= 0 else fill for i in index])

    counts = pick(counts_old, 0).astype(np.int64)
    targets = pick(targets_old, 0.0).astype(np.float64)
    mix = MixCheckpoint(pos, counts, pos, w.copy(), rebase(targets, counts, w), targets)
    out = blank_arrays(len(ours), arrays["held"].shape[0], arrays["queue"].shape[2])
    for name, spec in LAYOUT:  # each array's domain axis, from the one declaration
        axis = spec.split(",").index("d")
        src, dst = np.moveaxis(arrays[name], axis, 0), np.moveaxis(out[name], axis, 0)
        for j, i in enumerate(index):
            if i >= 0:
                dst[j] = src[i]
    return WeightLog(w, entries=[LogEntry(pos, w.copy())], digest=digest), mix, out
