"""The ``datasets`` library as the converter uses it: offline and quiet, for one call at a time.

Converting local files must never reach the network, yet ``load_dataset("json", ...)`` pings
the Hub to count the download unless offline mode is on, and prints progress bars. Offline
mode is read from the environment once, when ``datasets`` is imported, so setting
``HF_*_OFFLINE`` would change the whole process (and only if it had not imported ``datasets``
yet). Instead :func:`local_datasets` sets ``datasets``' own switches for the duration of a
call and restores them, and loads pass ``DownloadConfig(local_files_only=True)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import InputError


@contextmanager
def local_datasets() -> Iterator[Any]:
    """``datasets``, offline (no Hub request) and quiet, until the block ends; then the
    library's settings are as they were."""
    import datasets
    from datasets import config
    from datasets import utils as dutils
    from datasets.utils import logging as dlog

    saved = (config.HF_HUB_OFFLINE, config.HF_UPDATE_DOWNLOAD_COUNTS, dlog.get_verbosity(),
             dutils.are_progress_bars_disabled())
    config.HF_HUB_OFFLINE, config.HF_UPDATE_DOWNLOAD_COUNTS = True, False
    dlog.set_verbosity_error()
    dutils.disable_progress_bars()
    try:
        yield datasets
    finally:
        config.HF_HUB_OFFLINE, config.HF_UPDATE_DOWNLOAD_COUNTS = saved[0], saved[1]
        dlog.set_verbosity(saved[2])
        if not saved[3]:
            dutils.enable_progress_bars()


def load_local(builder: str, path: str, **kwargs: Any) -> Any:
    """``load_dataset(builder, data_files=[path], streaming=True, split="train")`` offline,
    as Arrow tables."""
    with local_datasets() as ds:
        loaded = ds.load_dataset(builder, data_files=[path], streaming=True, split="train",
                                 download_config=ds.DownloadConfig(local_files_only=True),
                                 **kwargs)
        return loaded.with_format("arrow")


def load_hf_dataset(path: str) -> Any:
    """A ``datasets.Dataset`` saved with ``save_to_disk`` (memory-mapped, not copied)."""
    try:
        with local_datasets() as ds:
            return ds.load_from_disk(path)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for broken folders
        raise InputError(path, f"not a readable save_to_disk folder ({e})",
                         "re-save it with Dataset.save_to_disk") from e
