"""Counter-based random streams: a generator is a pure function of (seed, keys).

numpy's SeedSequence hashes the key tuple, so streams for different (domain, epoch, window ...)
keys are independent and any one can be created in O(1) without replaying the others.
"""

from __future__ import annotations

import numpy as np

# stream families, so that e.g. (domain 1, epoch 2) block order and window shuffles never collide
BLOCK_ORDER = 1
WINDOW_SHUFFLE = 2
CHUNK_ORDER = 3


def generator(seed: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & (2**63 - 1), *keys])))


def permutation(n: int, seed: int, *keys: int) -> np.ndarray:
    return generator(seed, *keys).permutation(n)


def domain_key(name: str) -> int:
    """A domain's seeding key, from its name: a domain keeps its order when other domains are
    added or retired (its position in the stream changes, its name does not)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little")
