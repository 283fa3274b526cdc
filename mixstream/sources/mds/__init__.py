"""MDS, mosaicml-streaming's format: a directory of ``index.json`` plus ``shard.NNNNN.mds``
files (optionally compressed), read natively (:mod:`.reader`, :mod:`.encodings`)."""

from __future__ import annotations

from ..base import Source
from ..location import Format, Location
from .reader import INDEX, MDSShard, MDSSource

__all__ = ["FORMAT", "MDSShard", "MDSSource"]


def _detect(loc: Location) -> bool:
    return loc.has(INDEX)


def _open(loc: Location) -> Source:
    return MDSSource(loc.path.rstrip("/") if loc.is_url else loc.path, remote=loc.remote,
                     verify=loc.verify)


FORMAT = Format("mds", _detect, _open, "MDS directories (index.json)")
