"""Choosing the sample mixtures to train before fitting a mixing law.

The Data Mixing Laws authors train their sample mixtures on the same halving grid their
proposer searches (``data/5Mix/proportions.txt``: 26 mixtures for 5 domains, many with exact
zeros): every share is 0 or ``2^-s`` (down to ``grid``), one domain takes the remainder.
Zeros matter — they pin the law's behaviour at the boundary, where the proposer often ends —
and so does the count: the explicit law has ``M + 2`` parameters per validation domain
(``M + 1`` identifiable), so ``DataMixingLaw.fit`` refuses fewer than ``M + 2`` mixtures and
warns below ``2 (M + 1)``; :func:`sample_mixtures` defaults to ``2 (M + 1) + 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def default_count(m: int) -> int:
    """Sample mixtures to train for ``m`` domains: ``2 (m + 1) + 2``."""
    return 2 * (m + 1) + 2


def sample_mixtures(domains: int | Sequence[str], n: int | None = None, *, grid: float = 1 / 16,
                    caps: Sequence[float] | None = None, seed: int = 0,
                    max_tries: int = 100_000) -> np.ndarray:
    """``n`` distinct mixtures ``[n, M]`` on the authors' halving grid, zeros included.

    Each row: the domains in a random order; all but the last take ``0`` or
    ``grid · 2^s ≤ cap`` (uniformly among those values, rejected if the running sum
    exceeds 1); the last takes the remainder (rejected above its cap). Every domain is
    non-zero in at least one row and the uniform-ish rows are not required — the set spans the
    boundary as the authors' does. Deterministic in ``seed``.
    """
    m = domains if isinstance(domains, int) else len(domains)
    if m < 2:
        raise ValueError(f"need >= 2 domains, got {m}")
    if not 0 < grid <= 0.5:
        raise ValueError(f"grid must be in (0, 0.5], got {grid}")
    n = default_count(m) if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cap = np.ones(m) if caps is None else np.minimum(np.asarray(caps, dtype=np.float64), 1.0)
    if cap.shape != (m,) or np.any(cap < 0) or cap.sum() < 1 - 1e-12:
        raise ValueError(f"caps must be {m} values >= 0 summing to >= 1, got {cap.tolist()}")
    levels = [grid * 2.0 ** s for s in range(int(np.log2(1 / grid)) + 1)]
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, ...]] = []
    seen: set[tuple[float, ...]] = set()
    for _ in range(max_tries):
        if len(rows) >= n:
            break
        order = rng.permutation(m)
        r = np.zeros(m)
        ok = True
        for j in order[:-1]:
            vals = [0.0] + [v for v in levels if v <= cap[j] + 1e-12]
            r[j] = vals[rng.integers(len(vals))]
            if r.sum() > 1 + 1e-12:
                ok = False
                break
        last = order[-1]
        r[last] = 1.0 - r.sum()
        if not ok or r[last] < -1e-12 or r[last] > cap[last] + 1e-12:
            continue
        r = np.round(np.maximum(r, 0.0), 12).astype(np.float64)
        key = tuple(r.tolist())
        if key in seen:
            continue
        seen.add(key)
        rows.append(key)
        if len(rows) == n:  # make sure every domain is trained on somewhere
            arr = np.array(rows)
            missing = np.flatnonzero(arr.max(axis=0) == 0)
            if missing.size:
                drop = int(rng.integers(len(rows)))
                seen.discard(rows.pop(drop))
    if len(rows) < n:
        raise ValueError(f"could not draw {n} distinct mixtures on the grid {grid} within caps "
                         f"{cap.tolist()}; lower n or refine the grid")
    return np.array(rows)
