"""The format layer: one readable :class:`~.base.Source` per on-disk format.

* :mod:`.base` — the ``Source`` protocol (required: ``block_sizes``, ``schema``,
  ``read_block``; optional with defaults: ``prefetch``, ``stats``, ``tokens_per_sample``,
  ``fingerprint_parts``) and the block helpers; :mod:`.arrow` (Arrow -> numpy without
  per-token work) and :mod:`.integrity` (file hashes, structural checks) are shared by formats.
* One module or package per format: :mod:`.native` (manifest + reader; Parquet or Arrow IPC
  shards), :mod:`.parquet`, :mod:`.mds`, :mod:`.hf`, :mod:`.npy`.
* :mod:`.registry` lists the formats; :mod:`.location` is what a format's detection sees (a
  local path and a URL alike); :mod:`.resolve` turns a user's spec into sources and a
  :class:`~.resolve.Domain`.

Imports point down: this layer uses :mod:`mixstream.errors` and :mod:`mixstream.remote`
only; the converter (:mod:`mixstream.shards`) sits above it.
"""
