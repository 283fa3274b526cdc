"""Every loader of the comparison, built the way its documentation suggests, over the same corpus.

``build(name, root, num_workers, seed)`` returns a :class:`Bench`: ``batches()`` yields batches
forever (a loader whose epoch ends is simply iterated again, the restart cost included), and
each batch is a tensor ``[32, 512]`` or a dict holding one under ``"input_ids"``.
Optional hooks: ``set_weights`` (weight-update latency), ``checkpoint`` / ``resume`` (time to resume).

Only the imports of the loader being built are done, so each runs in its own environment.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from benchmarks.common import BATCH, SEQ

# ------------------------------------------------------------------------------ helpers


def _meta(root: str) -> dict:
    import json

    with open(os.path.join(root, "meta.json")) as f:
        return json.load(f)


def _forever(make_iter) -> Iterator[Any]:
    while True:
        yield from make_iter()


def tokens_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        return batch["input_ids"]
    return batch


class Bench:
    """One configured loader; ``loader`` is the object a trainer would iterate."""

    name = ""
    domain_tag: str | None = None  # key of a domain tag in the batch, if the loader tags

    def __init__(self, root: str, num_workers: int, seed: int):
        self.root = root
        self.meta = _meta(root)
        self.num_workers = num_workers
        self.seed = seed
        self.weights = list(self.meta["weights"])
        self.loader: Any = None

    def batches(self) -> Iterator[Any]:
        return _forever(lambda: iter(self.loader))

    def close(self) -> None:
        pass


class _RandomRows:
    """i.i.d. domain draws by weight, uniform rows within the domain (vectorised in chunks)."""

    def __init__(self, meta: dict, seed: int):
        self.rng = np.random.default_rng(seed)
        self.p = np.asarray(meta["weights"], dtype=np.float64)
        self.offsets = np.asarray(meta["offsets"], dtype=np.int64)
        self.sizes = np.asarray(meta["sizes"], dtype=np.int64)

    def chunk(self, n: int) -> np.ndarray:
        dom = self.rng.choice(len(self.p), size=n, p=self.p)
        return self.offsets[dom] + (self.rng.random(n) * self.sizes[dom]).astype(np.int64)


# ------------------------------------------------------------------------------ raw limits


class _RowStream(IterableDataset):
    """Random single rows of ``all.npy`` (one numpy view per sample)."""

    def __init__(self, root: str, seed: int):
        self.root, self.seed = root, seed

    def __iter__(self):
        info = get_worker_info()
        wid = 0 if info is None else info.id
        mm = np.load(os.path.join(self.root, "all.npy"), mmap_mode="r")
        rows = _RandomRows(_meta(self.root), [self.seed, wid, 7])
        while True:
            for r in rows.chunk(4096).tolist():
                yield mm[r]


class _BatchStream(IterableDataset):
    """Pre-gathered batches: one numpy fancy-index of 32 random rows of ``all.npy`` per batch."""

    def __init__(self, root: str, seed: int):
        self.root, self.seed = root, seed

    def __iter__(self):
        info = get_worker_info()
        wid = 0 if info is None else info.id
        mm = np.load(os.path.join(self.root, "all.npy"), mmap_mode="r")
        rows = _RandomRows(_meta(self.root), [self.seed, wid, 7])
        while True:
            idx = rows.chunk(BATCH * 128).reshape(-1, BATCH)
            for r in idx:
                yield torch.from_numpy(mm[r])


class _Constant(IterableDataset):
    """The DataLoader's own inter-process ceiling: one prebuilt batch yielded over and over."""

    def __init__(self, copy: bool):
        self.copy = copy

    def __iter__(self):
        batch = {"input_ids": torch.randint(0, 50257, (BATCH, SEQ)).to(torch.uint16),
                 "domain": torch.zeros(BATCH, dtype=torch.int64),
                 "index": torch.arange(BATCH, dtype=torch.int64)}
        while True:
            yield {k: v.clone() for k, v in batch.items()} if self.copy else batch


class RawRows(Bench):
    """Plain loop: random rows from np.memmap, default collate every 32 (no DataLoader at 0
    workers; an IterableDataset in a DataLoader with workers)."""

    name = "memmap_rows"

    def __init__(self, root, num_workers, seed, dataloader: bool = False):
        super().__init__(root, num_workers, seed)
        ds = _RowStream(root, seed)
        if num_workers or dataloader:
            self.loader = DataLoader(ds, batch_size=BATCH, num_workers=num_workers)
        else:
            self.loader = None
            self._ds = ds

    def batches(self):
        if self.loader is not None:
            return iter(self.loader)
        from torch.utils.data import default_collate

        def gen():
            buf = []
            for row in self._ds:
                buf.append(row)
                if len(buf) == BATCH:
                    yield default_collate(buf)
                    buf = []
        return gen()


class RawBatches(Bench):
    name = "memmap_batches"

    def __init__(self, root, num_workers, seed):
        super().__init__(root, num_workers, seed)
        ds = _BatchStream(root, seed)
        self._ds = ds
        self.loader = DataLoader(ds, batch_size=None, num_workers=num_workers) if num_workers else None

    def batches(self):
        return iter(self.loader) if self.loader is not None else iter(self._ds)


class Ceiling(Bench):
    name = "dl_ceiling"

    def __init__(self, root, num_workers, seed, copy: bool = False):
        super().__init__(root, num_workers, seed)
        self.loader = DataLoader(_Constant(copy), batch_size=None, num_workers=num_workers,
                                 prefetch_factor=2 if num_workers else None)

    def batches(self):
        return iter(self.loader)


# ------------------------------------------------------------------------------ mixstream


class Mix(Bench):
    name = "mixstream"
    domain_tag = "domain"

    def __init__(self, root, num_workers, seed, batched: bool = True, subdir: str = "native",
                 prefetch_factor: int | None = None, threads: bool = False, **stream_kw):
        super().__init__(root, num_workers, seed)
        from mixstream import MixLoader, MixStream

        names = self.meta["domains"]
        # the memmap loops yield the stored uint16: compare like with like (the int64 default
        # of MixStream is measured separately as "mixstream_arrow_i64")
        stream_kw.setdefault("token_dtype", None)
        if "token_dtype" not in inspect.signature(MixStream).parameters:  # an older checkout
            stream_kw.pop("token_dtype")
        self.stream = MixStream({n: os.path.join(root, subdir, n) for n in names},
                                weights=dict(zip(names, self.weights)), seed=seed, **stream_kw)
        kw = {"prefetch_factor": prefetch_factor} if num_workers and prefetch_factor else {}
        if threads:  # ``workers`` reader threads in this process instead of worker processes
            kw["reader_threads"] = num_workers
            num_workers = 0
        self.loader = MixLoader(self.stream, batch_size=BATCH, num_workers=num_workers,
                                batched=batched, **kw)

    def set_weights(self, weights: list[float]) -> int:
        return self.stream.set_weights(dict(zip(self.meta["domains"], weights)))

    def checkpoint_at(self, samples: int) -> dict:
        """State at ``samples`` consumed, computed from the plan (no data read)."""
        self.stream.consumed_batches = samples // BATCH
        return self.stream.state_dict()

    def resume(self, state: dict) -> None:
        self.stream.load_state_dict(state)


# ------------------------------------------------------------------------------ torchdata.nodes


class TorchdataNodes(Bench):
    """``MultiNodeWeightedSampler`` over per-domain ``SamplerWrapper(RandomSampler)`` index
    sources (each tags its items with the domain id), ``Batcher(32)``, then one gather of the 32 rows from the memmap per batch
    (``Mapper`` at 0 workers, ``ParallelMapper`` with threads or processes otherwise)."""

    name = "torchdata"
    domain_tag = "domain"

    def __init__(self, root, num_workers, seed, method: str = "thread", per_sample: bool = False):
        super().__init__(root, num_workers, seed)
        self.method = method
        self.per_sample = per_sample
        self.loader = self._build()

    def _build(self):
        import torchdata.nodes as tn
        from torch.utils.data import RandomSampler

        meta = self.meta
        sources = {}
        for d, (name, n) in enumerate(zip(meta["domains"], meta["sizes"])):
            g = torch.Generator().manual_seed(self.seed * 1000 + d)
            node = tn.SamplerWrapper(RandomSampler(range(n), generator=g))
            tag = _RowRead(self.root, meta["offsets"][d], d) if self.per_sample else _RowTag(meta["offsets"][d], d)
            sources[name] = tn.Mapper(node, tag)
        # torchdata 0.11 (the newest on PyPI) has no tag_output=: the sources tag their items
        mixed = tn.MultiNodeWeightedSampler(
            sources, dict(zip(meta["domains"], map(float, self.weights))), seed=self.seed,
            stop_criteria=tn.StopCriteria.CYCLE_FOREVER)
        batches = tn.Batcher(mixed, batch_size=BATCH)
        if self.per_sample:  # the DataLoader-like pattern: read each row, default collate
            from torch.utils.data import default_collate as fetch
        else:
            fetch = _Gather(self.root, meta["domains"])
        if self.num_workers:
            node = tn.ParallelMapper(batches, fetch, num_workers=self.num_workers,
                                     method=self.method, in_order=True)
        else:
            node = tn.Mapper(batches, fetch)
        return tn.Loader(node)

    def checkpoint_after(self, samples: int) -> dict:
        it = iter(self.loader)
        for _ in range(samples // BATCH):
            next(it)
        return self.loader.state_dict()

    def resume(self, state: dict) -> None:
        self.loader.load_state_dict(state)


class _RowTag:
    def __init__(self, offset: int, domain: int):
        self.offset = offset
        self.domain = domain

    def __call__(self, i: int) -> dict:
        return {"row": self.offset + i, "domain": self.domain}


class _RowRead:
    def __init__(self, root: str, offset: int, domain: int):
        self.path = os.path.join(root, "all.npy")
        self.offset = offset
        self.domain = domain
        self._mm = None

    def __call__(self, i: int) -> dict:
        if self._mm is None:
            self._mm = np.load(self.path, mmap_mode="r")
        return {"input_ids": self._mm[self.offset + i], "domain": self.domain}


class _Gather:
    def __init__(self, root: str, names: list[str]):
        self.path = os.path.join(root, "all.npy")
        self.names = names
        self._mm = None

    def __getstate__(self):
        return {"path": self.path, "names": self.names, "_mm": None}

    def __call__(self, items: list[dict]) -> dict:
        if self._mm is None:
            self._mm = np.load(self.path, mmap_mode="r")
        rows = np.fromiter((x["row"] for x in items), dtype=np.int64, count=len(items))
        return {"input_ids": torch.from_numpy(self._mm[rows]),
                "domain": torch.tensor([x["domain"] for x in items])}


# ------------------------------------------------------------------------------ litdata


class Litdata(Bench):
    """``CombinedStreamingDataset(weights=..., iterate_over_all=False)`` of per-domain
    ``StreamingDataset(item_loader=TokensLoader(block_size=512), shuffle=True)`` and
    ``StreamingDataLoader``."""

    name = "litdata"

    def __init__(self, root, num_workers, seed):
        super().__init__(root, num_workers, seed)
        self.loader = self._build()

    def _build(self):
        from litdata import (
            CombinedStreamingDataset,
            StreamingDataLoader,
            StreamingDataset,
            TokensLoader,
        )

        dss = [StreamingDataset(os.path.join(self.root, "litdata", n),
                                item_loader=TokensLoader(block_size=SEQ), shuffle=True,
                                seed=self.seed)
               for n in self.meta["domains"]]
        combined = CombinedStreamingDataset(dss, seed=self.seed, weights=self.weights,
                                            iterate_over_all=False)
        return StreamingDataLoader(combined, batch_size=BATCH, num_workers=self.num_workers)

    def checkpoint_after(self, samples: int) -> dict:
        it = iter(self.loader)
        n = 0
        while n < samples:
            try:
                n += len(next(it))
            except StopIteration:
                it = iter(self.loader)
        return self.loader.state_dict()

    def resume(self, state: dict) -> None:
        self.loader.load_state_dict(state)


# ------------------------------------------------------------------------------ HF datasets


class HFInterleave(Bench):
    """``interleave_datasets(probabilities=...)`` of ``Dataset.to_iterable_dataset(num_shards=8)
    .shuffle(buffer_size=1000)`` per domain, torch format, plain DataLoader."""

    name = "hf_interleave"

    def __init__(self, root, num_workers, seed):
        super().__init__(root, num_workers, seed)
        import datasets

        datasets.disable_progress_bars()
        parts = [datasets.load_from_disk(os.path.join(root, "hf", n))
                 .to_iterable_dataset(num_shards=8).shuffle(seed=seed, buffer_size=1000)
                 for n in self.meta["domains"]]
        self.dataset = datasets.interleave_datasets(
            parts, probabilities=self.weights, seed=seed,
            stopping_strategy="all_exhausted").with_format("torch")
        self.loader = DataLoader(self.dataset, batch_size=BATCH, num_workers=num_workers)

    def checkpoint_after(self, samples: int) -> dict:
        """The dataset's own state (num_workers=0; with workers it needs StatefulDataLoader)."""
        it = iter(self.dataset)
        for _ in range(samples):
            next(it)
        return self.dataset.state_dict()

    def resume(self, state: dict) -> None:
        self.dataset.load_state_dict(state)


class HFMap(Bench):
    """Map-style: ``concatenate_datasets`` of the per-domain Arrow datasets, torch format,
    ``WeightedRandomSampler`` (per-sample weight = w_d / n_d), DataLoader (``__getitems__``
    fetches each batch in one Arrow take)."""

    name = "hf_map"

    def __init__(self, root, num_workers, seed):
        super().__init__(root, num_workers, seed)
        import datasets
        from torch.utils.data import WeightedRandomSampler

        datasets.disable_progress_bars()
        ds = datasets.concatenate_datasets(
            [datasets.load_from_disk(os.path.join(root, "hf", n)) for n in self.meta["domains"]])
        self.dataset = ds.with_format("torch")
        per = np.concatenate([np.full(n, w / n) for w, n in zip(self.weights, self.meta["sizes"])])
        g = torch.Generator().manual_seed(seed)
        self.sampler = WeightedRandomSampler(torch.from_numpy(per), num_samples=len(ds),
                                             replacement=True, generator=g)
        self.loader = DataLoader(self.dataset, batch_size=BATCH, sampler=self.sampler,
                                 num_workers=num_workers)


# ------------------------------------------------------------------------------ mosaicml-streaming


class Mosaic(Bench):
    """``StreamingDataset(streams=[Stream(proportion=w)...], shuffle=True, batch_size=32)`` and
    ``StreamingDataLoader``. Raw MDS is read in place; zstd MDS is read as a "remote" (a local
    directory) into a fresh local cache, decompressing each shard on first use."""

    name = "mosaic"

    def __init__(self, root, num_workers, seed, zstd: bool = False, epoch_size: int | None = None,
                 cache: str | None = None):
        super().__init__(root, num_workers, seed)
        import tempfile

        from streaming import Stream, StreamingDataLoader, StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        names = self.meta["domains"]
        self._tmp = None
        if zstd:
            self._tmp = cache or tempfile.mkdtemp(prefix="mosaic-cache-")
            streams = [Stream(remote=os.path.join(root, "mds_zstd", n),
                              local=os.path.join(self._tmp, n), proportion=w)
                       for n, w in zip(names, self.weights)]
        else:
            streams = [Stream(local=os.path.join(root, "mds_raw", n), proportion=w)
                       for n, w in zip(names, self.weights)]
        self.dataset = StreamingDataset(streams=streams, shuffle=True, shuffle_seed=seed,
                                        batch_size=BATCH, epoch_size=epoch_size,
                                        num_canonical_nodes=1)
        self.loader = StreamingDataLoader(self.dataset, batch_size=BATCH, num_workers=num_workers)

    def checkpoint_at(self, samples: int) -> dict:
        """mosaic's resume state is a position, so it can be written without iterating."""
        per_epoch = int(self.dataset.epoch_size)
        return {"epoch": samples // per_epoch, "sample_in_epoch": samples % per_epoch,
                "num_canonical_nodes": 1,
                "shuffle_seed": self.seed, "initial_physical_nodes": 1}

    def resume(self, state: dict) -> None:
        self.dataset.load_state_dict(state)

    def close(self) -> None:
        import shutil

        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ registry

LOADERS: dict[str, Any] = {
    "memmap_rows": lambda r, w, s: RawRows(r, w, s),
    "memmap_rows_dl": lambda r, w, s: RawRows(r, w, s, dataloader=True),
    "memmap_batches": lambda r, w, s: RawBatches(r, w, s),
    "dl_ceiling": lambda r, w, s: Ceiling(r, w, s),
    "dl_ceiling_copy": lambda r, w, s: Ceiling(r, w, s, copy=True),
    "mixstream": lambda r, w, s: Mix(r, w, s),
    "mixstream_sample": lambda r, w, s: Mix(r, w, s, batched=False),
    "mixstream_arrow": lambda r, w, s: Mix(r, w, s, subdir="native_arrow"),
    "mixstream_arrow_sample": lambda r, w, s: Mix(r, w, s, batched=False, subdir="native_arrow"),
    "mixstream_arrow_i64": lambda r, w, s: Mix(r, w, s, subdir="native_arrow",
                                               token_dtype=torch.int64),
    "mixstream_lists": lambda r, w, s: Mix(r, w, s, subdir="native_lists"),
    "mixstream_arrow_w1024": lambda r, w, s: Mix(r, w, s, subdir="native_arrow",
                                                 shuffle_window=1024),
    "mixstream_threads": lambda r, w, s: Mix(r, w, s, threads=True),
    "mixstream_arrow_threads": lambda r, w, s: Mix(r, w, s, subdir="native_arrow", threads=True),
    "torchdata": lambda r, w, s: TorchdataNodes(r, w, s),
    "torchdata_proc": lambda r, w, s: TorchdataNodes(r, w, s, method="process"),
    "torchdata_rows": lambda r, w, s: TorchdataNodes(r, w, s, per_sample=True),
    "litdata": lambda r, w, s: Litdata(r, w, s),
    "hf_interleave": lambda r, w, s: HFInterleave(r, w, s),
    "hf_map": lambda r, w, s: HFMap(r, w, s),
    "mosaic_raw": lambda r, w, s: Mosaic(r, w, s),
    "mosaic_zstd": lambda r, w, s: Mosaic(r, w, s, zstd=True),
}

# what each loader reads (for warming the page cache) and which interpreter runs it
FILES = {"memmap_rows": "all.npy", "memmap_rows_dl": "all.npy", "memmap_batches": "all.npy",
         "dl_ceiling": None, "dl_ceiling_copy": None, "mixstream": "native",
         "mixstream_sample": "native", "mixstream_arrow": "native_arrow",
         "mixstream_arrow_sample": "native_arrow", "mixstream_arrow_i64": "native_arrow",
         "mixstream_threads": "native", "mixstream_arrow_threads": "native_arrow",
         "mixstream_lists": "native_lists", "mixstream_arrow_w1024": "native_arrow", "torchdata": "all.npy", "torchdata_proc": "all.npy",
         "torchdata_rows": "all.npy",
         "litdata": "litdata", "hf_interleave": "hf", "hf_map": "hf", "mosaic_raw": "mds_raw",
         "mosaic_zstd": "mds_zstd"}
MOSAIC = ("mosaic_raw", "mosaic_zstd")


def build(name: str, root: str, num_workers: int, seed: int = 0) -> Bench:
    b = LOADERS[name](root, num_workers, seed)
    b.name = name
    return b
