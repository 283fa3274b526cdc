"""Hugging Face ``datasets.Dataset`` (Arrow-backed, memory-mapped) or a ``save_to_disk`` folder."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import SourceError
from .arrow import block_from_arrow, schema_from_arrow
from .base import Block, Schema, Source
from .integrity import validate_arrow
from .location import Format, Location

MARKERS = ("dataset_info.json", "state.json")  # what save_to_disk writes beside the Arrow files


class HFSource(Source):
    """Blocks are consecutive slices of ``block_rows`` rows of the dataset's Arrow table."""

    def __init__(self, data: Any, *, block_rows: int = 1024, columns: list[str] | None = None):
        import datasets

        if isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            try:
                data = datasets.load_from_disk(path)
            except (FileNotFoundError, ValueError) as e:
                raise SourceError(f"{path}: not a datasets save_to_disk folder ({e})") from e
            self.uri = path
        else:
            self.uri = f"datasets.Dataset({getattr(data, 'info', None) and data.info.dataset_name or 'in memory'})"
        if isinstance(data, datasets.DatasetDict):
            raise SourceError(f"{self.uri}: a DatasetDict with splits {list(data)}; pass one split, "
                              f"e.g. dataset['train'] or the split's sub-folder")
        if not isinstance(data, datasets.Dataset):
            raise SourceError(f"{self.uri}: expected a datasets.Dataset, got {type(data).__name__} "
                              f"(IterableDataset has no random access: save it with save_to_disk)")
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        if columns is not None:
            data = data.select_columns(columns)
        self.dataset = data.with_format("arrow")
        n = len(data)
        full, rest = divmod(n, block_rows)
        self._sizes = np.asarray([block_rows] * full + ([rest] if rest else []), dtype=np.int64)
        self.block_rows = block_rows
        self._schema = schema_from_arrow(data.features.arrow_schema)

    @property
    def block_sizes(self) -> np.ndarray:
        return self._sizes

    @property
    def schema(self) -> Schema:
        return self._schema

    def read_block(self, index: int) -> Block:
        start = index * self.block_rows
        try:
            table = self.dataset[start : start + int(self._sizes[index])]
            validate_arrow(table)  # datasets memory-maps its Arrow files unchecked
            return block_from_arrow(table)
        except (OSError, pa.ArrowException, ValueError) as e:
            raise SourceError(f"{self.uri}: cannot read rows {start}.. ({type(e).__name__}: "
                              f"{e}); the dataset's Arrow files are corrupt: save it again") from e

    def fingerprint_parts(self) -> dict[str, Any]:
        """The Arrow files' names and sizes, the row count, the features and the datasets
        fingerprint (from state.json for a saved dataset, so a copied folder gives the same)."""
        files = []
        for f in self.dataset.cache_files:
            name = f.get("filename", "")
            try:
                size: int | None = os.path.getsize(name)
            except OSError:
                size = None
            files.append([os.path.basename(name), size])
        return {"kind": "hf", "rows": len(self.dataset), "block_rows": self.block_rows,
                "features": str(self.dataset.features), "files": files,
                "datasets_fingerprint": getattr(self.dataset, "_fingerprint", None)}


def from_object(obj: Any) -> Source | None:
    """An :class:`HFSource` for an in-memory ``datasets.Dataset``/``DatasetDict``, else None."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        return None
    if isinstance(obj, (datasets.Dataset, datasets.DatasetDict)):
        return HFSource(obj)
    return None


def _detect(loc: Location) -> bool:
    return any(loc.has(m) for m in MARKERS)


def _open(loc: Location) -> Source:
    if loc.is_url:
        raise SourceError(f"{loc.path}: a datasets save_to_disk folder at a URL is not read "
                          f"remotely; convert it with `mixstream-shard convert` and upload the "
                          f"shard directory, or copy it to local disk")
    return HFSource(loc.path)


FORMAT = Format("hf", _detect, _open, "datasets save_to_disk folders")
