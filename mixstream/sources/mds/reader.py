"""Read MDS datasets (mosaicml-streaming's format) natively: one block = one shard.

``index.json`` gives every shard's sample count, so construction reads no shard data. A shard
is read whole (raw ``.mds`` file, or its compressed form decompressed in memory; nothing is
written into the dataset directory), checked against the sizes (and, on request, hashes) in
``index.json``, and decoded column by column with numpy (:mod:`.encodings`).

Paths may be local or fsspec URLs (``s3://``, ``gs://``, ``http(s)://``, ``memory://`` ...):
remote shards are fetched through the shared cache (:mod:`mixstream.remote`), checked against
index.json's sizes and hashes before they enter it; the compressed form is fetched first.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from ...errors import SourceError
from ...remote.config import RemoteConfig
from ...remote.fs import is_url, join, local_path
from ...remote.store import Request, get_store
from ..base import Block, Schema, Source
from ..integrity import confine, hasher, pick_algorithm, verify_bytes
from .encodings import Encoding, decode_records, parse_encoding, unreadable

INDEX = "index.json"
COMPRESSIONS = ("zstd", "gz", "bz2")  # decoded here; mosaic also writes br and snappy


# ------------------------------------------------------------------ storage


def _read(path: str, remote: RemoteConfig | None = None, info: FileInfo | None = None) -> bytes:
    """Whole file; ``FileNotFoundError`` if absent. URLs go through the remote store: a shard
    (``info`` given) through the cache, checked against its size and hashes; index.json uncached."""
    if is_url(path):
        store = get_store(remote or RemoteConfig())
        if info is None:
            return store.read_small(path)
        with store.fetch(_request(path, info)) as pin:
            return pin.read()
    with open(path, "rb") as f:
        return f.read()


def _request(path: str, info: FileInfo) -> Request:
    return Request(path, size=info.bytes, hashes=tuple(sorted(info.hashes.items())))


# ------------------------------------------------------------------ index.json


@dataclass(frozen=True)
class FileInfo:
    """One shard file as recorded in index.json."""

    basename: str
    bytes: int
    hashes: dict[str, str]


@dataclass(frozen=True)
class MDSShard:
    """One shard entry of index.json (the fields a reader needs)."""

    raw: FileInfo
    zip: FileInfo | None
    compression: str | None
    samples: int
    names: tuple[str, ...]
    encodings: tuple[str, ...]
    sizes: tuple[int | None, ...]


def _file_info(obj: Any, where: str) -> FileInfo:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is not an object")
    base, size, hashes = obj.get("basename"), obj.get("bytes"), obj.get("hashes") or {}
    if (not isinstance(base, str) or not base or "\x00" in base or not _is_count(size)):
        raise ValueError(f"{where} needs a 'basename' string and a non-negative 'bytes' count")
    if (os.path.isabs(base) or base.startswith(("/", "\\")) or "://" in base
            or ".." in base.replace("\\", "/").split("/")):
        raise ValueError(f"{where} basename {base!r} points outside the dataset directory")
    if not isinstance(hashes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise ValueError(f"{where} 'hashes' is not an object of algorithm: hex digest strings")
    return FileInfo(base, size, dict(hashes))


MAX_COUNT = 1 << 48  # larger counts are corruption (and would overflow int64 sums downstream)


def _is_count(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_COUNT


def parse_shard(obj: Any, i: int) -> MDSShard:
    """Validate one ``shards[i]`` entry; ``ValueError`` says what is wrong."""
    where = f"shards[{i}]"
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is not an object")
    if obj.get("format") != "mds":
        raise ValueError(f"{where} has format {obj.get('format')!r}; only 'mds' shards are read")
    if obj.get("version") != 2:
        raise ValueError(f"{where} has version {obj.get('version')!r}; expected 2")
    names, encs, sizes = (
        obj.get("column_names"),
        obj.get("column_encodings"),
        obj.get("column_sizes"),
    )
    if not (isinstance(names, list) and isinstance(encs, list) and isinstance(sizes, list)):
        raise ValueError(f"{where} lacks column_names/column_encodings/column_sizes lists")
    if not names or not len(names) == len(encs) == len(sizes):
        raise ValueError(f"{where} column_names/encodings/sizes are empty or differ in length")
    if not all(isinstance(x, str) and x for x in names + encs):
        raise ValueError(f"{where} column_names/column_encodings must be non-empty strings")
    if len(set(names)) < len(names):
        raise ValueError(f"{where} column_names repeat a name")
    if not all(x is None or _is_count(x) for x in sizes):
        raise ValueError(f"{where} column_sizes must be byte counts or null")
    samples = obj.get("samples")
    if not _is_count(samples):
        raise ValueError(f"{where} 'samples' is not a non-negative integer")
    compression = obj.get("compression")
    zip_obj = obj.get("zip_data")
    if compression is not None and not isinstance(compression, str):
        raise ValueError(f"{where} 'compression' is not a string")
    return MDSShard(
        raw=_file_info(obj.get("raw_data"), f"{where}.raw_data"),
        zip=_file_info(zip_obj, f"{where}.zip_data") if zip_obj else None,
        compression=compression or None,
        samples=samples,
        names=tuple(names),
        encodings=tuple(encs),
        sizes=tuple(sizes),
    )


def load_index(root: str, remote: RemoteConfig | None = None) -> list[MDSShard]:
    """Parse ``<root>/index.json``; :class:`SourceError` names the file and the fix."""
    path = join(root, INDEX)
    try:
        obj = json.loads(_read(path, remote))
    except FileNotFoundError:
        raise SourceError(
            f"{path} not found: an MDS dataset directory holds index.json beside its shards "
            "(pass the directory MDSWriter wrote, or split= for a split subdirectory)"
        ) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise SourceError(f"{path} is not valid JSON ({exc}); restore or rewrite it") from exc
    except OSError as exc:
        raise SourceError(f"{path} cannot be read ({exc})") from exc
    try:
        if not isinstance(obj, dict) or obj.get("version") != 2:
            raise ValueError("expected an object with 'version': 2")
        shards = obj.get("shards")
        if not isinstance(shards, list) or not shards:
            raise ValueError("'shards' is missing or empty")
        return [parse_shard(s, i) for i, s in enumerate(shards)]
    except (ValueError, TypeError, RecursionError) as exc:
        raise SourceError(
            f"{path} is not an MDS index: {exc}; restore it or rewrite the dataset with MDSWriter"
        ) from exc


# ------------------------------------------------------------------ checks on file bytes


def file_hash(algo: str, data: bytes) -> str:
    """Hex digest as mosaicml-streaming writes it (hashlib or xxhash algorithm names)."""
    h = hasher(algo)
    h.update(data)
    return str(h.hexdigest())


def check_file(path: str, data: bytes, info: FileInfo, verify_hashes: bool,
               once: bool = False) -> None:
    """Size (always) and hashes of a shard file against index.json: every recorded hash
    (``verify_hashes``), or the fastest one once per file per process (``once``)."""
    if len(data) != info.bytes:
        raise SourceError(
            f"{path} is {len(data)} bytes but index.json says {info.bytes}: the shard is "
            "truncated or was replaced; re-download or rewrite the dataset"
        )
    if once and not verify_hashes:
        algo = pick_algorithm(info.hashes)
        if algo is not None:
            verify_bytes(path, data, algo, info.hashes[algo], listed_in=INDEX)
        return
    if not verify_hashes:
        return
    if not info.hashes:
        raise SourceError(
            f"{path}: verify_hashes=True but index.json records no hashes for it (written "
            "without MDSWriter(hashes=[...])); pass verify_hashes=False"
        )
    for algo, want in sorted(info.hashes.items()):
        try:
            got = file_hash(algo, data)
        except ValueError as exc:
            raise SourceError(f"{path}: cannot verify {algo}: {exc}") from exc
        if got != want:
            raise SourceError(
                f"{path} fails its {algo} check (index.json {want}, file {got}): the shard is "
                "corrupt; re-download or rewrite the dataset"
            )


def decompress(compression: str, data: bytes, raw_bytes: int) -> bytes:
    """Whole-file decompression of a shard (mosaic's ``compression.py`` families)."""
    algo = compression.split(":")[0]
    if algo == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_bytes)
    if algo == "gz":
        return gzip.decompress(data)
    if algo == "bz2":
        return bz2.decompress(data)
    raise ValueError(f"compression {compression!r} is not supported")


def parse_header(data: bytes, info: MDSShard) -> np.ndarray:
    """Check a raw shard's header against index.json; return its N+1 record offsets (int64)."""
    size = len(data)
    if size < 4:
        raise ValueError("shorter than its 4-byte sample count")
    n = int(np.frombuffer(data, "<u4", 1)[0])
    if n != info.samples:
        raise ValueError(f"holds {n} samples but index.json says {info.samples}")
    head = 4 * (n + 2)
    if size < head:
        raise ValueError(f"shorter than its {n + 1} sample offsets")
    offsets = np.frombuffer(data, "<u4", n + 1, offset=4).astype(np.int64)
    if offsets[0] < head or offsets[-1] != size or (np.diff(offsets) < 0).any():
        raise ValueError("sample offsets are out of order or point outside the file")
    try:
        config = json.loads(data[head : int(offsets[0])].decode("utf-8"))
        got = (config["column_names"], config["column_encodings"], config["column_sizes"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"embedded config JSON is unreadable ({exc})") from exc
    if got != (list(info.names), list(info.encodings), list(info.sizes)):
        raise ValueError(f"embedded column config {got} differs from index.json")
    return offsets


# ------------------------------------------------------------------ the source


class MDSSource(Source):
    """An MDS dataset directory (``index.json`` + ``shard.NNNNN.mds[.zstd]``) as a Source.

    ``split`` reads ``<path>/<split>``, as mosaicml-streaming does. Block ``i`` is shard ``i``:
    fixed-shape ``ndarray`` columns decode to ``[rows, *shape]`` arrays, dynamic 1-D ``ndarray``
    columns to :class:`Ragged`, numeric scalar encodings to 1-D arrays, and ``str``, ``bytes``,
    ``json``, ``str_int``, ``str_float``, ``str_decimal``, bare ``ndarray`` and (only with
    ``allow_unsafe_types``) ``pkl`` to lists. ``columns`` selects (and orders) the columns to
    decode. Holds no open files (picklable).

    Integrity: ``verify`` (default on) checks each local file once per process against the
    fastest hash index.json records for it (``xxh3_64``/``xxh64`` at >10 GB/s when
    recorded, else ``sha1``/``sha256``/``md5``); a dataset written without
    ``MDSWriter(hashes=[...])`` is checked structurally only (header, offsets, column
    config and every record's lengths). Remote files are checked on download.
    ``verify_hashes`` is stricter: every recorded hash on every read, and an error when none
    is recorded.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        split: str | None = None,
        columns: list[str] | None = None,
        allow_unsafe_types: bool = False,
        verify_hashes: bool = False,
        remote: RemoteConfig | None = None,
        verify: bool = True,
    ) -> None:
        root = local_path(path)
        self.uri = join(root, split) if split else root
        self.allow_unsafe_types = allow_unsafe_types
        self.verify_hashes = verify_hashes
        self.verify = bool(verify)
        self.remote = (remote or RemoteConfig()) if is_url(self.uri) else None
        self.shards = load_index(self.uri, self.remote)
        if self.remote is None:  # basenames are checked lexically; here symlinks too
            for s in self.shards:
                for f in (s.raw, s.zip):
                    if f is not None:
                        confine(self.uri, f.basename, where=join(self.uri, INDEX))
        self._encodings = self._check_columns()
        names = list(self.shards[0].names)
        unknown = [c for c in columns or [] if c not in names]
        if unknown or (columns is not None and (not columns or len(set(columns)) < len(columns))):
            raise SourceError(
                f"{join(self.uri, INDEX)}: columns={columns} must name distinct columns of "
                f"the dataset, which has {names}"
            )
        self.columns = list(columns) if columns is not None else names
        for name, e in zip(names, self._encodings, strict=True):
            why = unreadable(e, allow_unsafe_types=allow_unsafe_types)
            if why and name in self.columns:
                raise SourceError(f"{join(self.uri, INDEX)}: column {name!r}: {why}")
        self._block_sizes = np.array([s.samples for s in self.shards], dtype=np.int64)
        self._block_sizes.flags.writeable = False

    def _check_columns(self) -> list[Encoding]:
        """All shards must share one column set; parse its encodings once."""
        index = join(self.uri, INDEX)
        first = self.shards[0]
        for i, s in enumerate(self.shards):
            if (s.names, s.encodings) != (first.names, first.encodings):
                raise SourceError(
                    f"{index}: shard {s.raw.basename} has columns "
                    f"{dict(zip(s.names, s.encodings, strict=True))} but {first.raw.basename} has "
                    f"{dict(zip(first.names, first.encodings, strict=True))}; one MDSSource needs one column "
                    f"set (split the dataset into one source per schema)"
                )
            if i == 0 or s.sizes != first.sizes:
                self._check_sizes(s, index)
        encodings = []
        for name, text in zip(first.names, first.encodings, strict=True):
            try:
                encodings.append(parse_encoding(text))
            except ValueError as exc:
                raise SourceError(f"{index}: column {name!r}: {exc}") from exc
        return encodings

    def _check_sizes(self, s: MDSShard, index: str) -> None:
        for name, text, size in zip(s.names, s.encodings, s.sizes, strict=True):
            try:
                want = parse_encoding(text).size
            except ValueError:
                continue  # reported with its fix by _check_columns
            if size != want:
                raise SourceError(
                    f"{index}: column {name!r} ({text}) of {s.raw.basename} has column_size "
                    f"{size}, but that encoding is {want or 'variable'}-sized; the index is "
                    "corrupt: restore it or rewrite the dataset"
                )

    @property
    def _once(self) -> bool:
        """Check local files once per process (remote ones are checked on download)."""
        return self.verify and self.remote is None

    @property
    def block_sizes(self) -> np.ndarray:
        return self._block_sizes

    @property
    def schema(self) -> Schema:
        specs = {n: e.spec() for n, e in zip(self.shards[0].names, self._encodings, strict=True)}
        return {n: specs[n] for n in self.columns}

    def tokens_per_sample(self) -> float | None:
        """The width of the one fixed-shape integer column, if exactly one is selected."""
        fixed = [
            s.width
            for s in self.schema.values()
            if s.kind == "fixed" and np.dtype(s.dtype).kind in "iu"
        ]
        return float(fixed[0]) if len(fixed) == 1 and fixed[0] else None

    def _zip_first(self, info: MDSShard) -> bool:
        """Remote shards: fetch the compressed form first (less to transfer)."""
        return (self.remote is not None and info.zip is not None and bool(info.compression)
                and str(info.compression).split(":")[0] in COMPRESSIONS)

    def prefetch(self, blocks: Sequence[int]) -> None:
        """Start fetching the shards of ``blocks`` in the background (remote datasets)."""
        if self.remote is None:
            return
        reqs = []
        for b in blocks:
            info = self.shards[int(b)]
            f = info.zip if self._zip_first(info) and info.zip is not None else info.raw
            reqs.append(_request(join(self.uri, f.basename), f))
        get_store(self.remote).prefetch(reqs)

    def read_block(self, index: int) -> Block:
        if not 0 <= index < len(self.shards):
            raise IndexError(f"{self.uri}: block {index} out of range [0, {len(self.shards)})")
        info = self.shards[index]
        path, data = self._raw_bytes(info)
        try:
            offsets = parse_header(data, info)
            return decode_records(data, offsets, list(info.names), self._encodings, self.columns)
        except ValueError as exc:
            raise SourceError(
                f"{path}: {exc}; the shard is corrupt: re-download or rewrite the dataset"
            ) from exc

    def _checked_raw(self, raw_path: str, info: MDSShard) -> bytes | None:
        """The ``.mds`` file's bytes, checked against the index; None if it is missing."""
        try:
            data = _read(raw_path, self.remote, info.raw)
        except FileNotFoundError:
            return None
        check_file(raw_path, data, info.raw, self.verify_hashes, self._once)
        return data

    def _raw_bytes(self, info: MDSShard) -> tuple[str, bytes]:
        """The raw shard: the ``.mds`` file if present, else its compressed form, in memory."""
        raw_path = join(self.uri, info.raw.basename)
        # the compressed form first when the index says so, then the raw one
        raw = None if self._zip_first(info) else self._checked_raw(raw_path, info)
        if raw is not None:
            return raw_path, raw
        if info.zip is None or not info.compression:
            raise SourceError(
                f"{raw_path} is missing (listed in {INDEX}); restore the shard or rewrite "
                "the dataset"
            )
        zip_path = join(self.uri, info.zip.basename)
        if info.compression.split(":")[0] not in COMPRESSIONS:
            raise SourceError(
                f"{zip_path}: compression {info.compression!r} is not supported (supported: "
                f"{', '.join(COMPRESSIONS)}); decompress the shards to {info.raw.basename} or "
                "rewrite the dataset with compression='zstd'"
            )
        try:
            packed = _read(zip_path, self.remote, info.zip)
        except FileNotFoundError:
            raw = self._checked_raw(raw_path, info) if self._zip_first(info) else None
            if raw is not None:
                return raw_path, raw
            raise SourceError(
                f"shard missing: neither {zip_path} nor {raw_path} exists (listed in {INDEX}); "
                "restore the shard or rewrite the dataset"
            ) from None
        check_file(zip_path, packed, info.zip, self.verify_hashes, self._once)
        try:
            data = decompress(info.compression, packed, info.raw.bytes)
        except Exception as exc:  # ZstdError, OSError (gzip/bz2), EOFError ...
            raise SourceError(
                f"{zip_path} does not decompress as {info.compression} ({exc}); the shard is "
                "corrupt: re-download or rewrite the dataset"
            ) from exc
        check_file(f"{zip_path} (decompressed)", data, info.raw, self.verify_hashes)
        return zip_path, data

    def fingerprint_parts(self) -> dict[str, Any]:
        """index.json's shard entries: basenames, byte counts, recorded hashes, sample counts
        and column encodings (relative names only, so a copied dataset gives the same)."""
        def f(x: FileInfo | None) -> list[Any] | None:
            return None if x is None else [x.basename, x.bytes, sorted(x.hashes.items())]

        return {"kind": "mds", "columns": self.columns,
                "shards": [[f(s.raw), f(s.zip), s.compression, s.samples, list(s.names),
                            list(s.encodings)] for s in self.shards]}

    def __repr__(self) -> str:
        return f"MDSSource({self.uri!r}, shards={len(self.shards)}, samples={self.num_samples})"
