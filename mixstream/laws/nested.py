"""Nesting the mixing law with step and size scaling laws (Data Mixing Laws, Algorithm 1).

Small runs (several model sizes, each trained on every sample mixture) are extrapolated to the
target run before the mixing law is fitted (``pipeline/run.sh``):

1. per (model size, mixture): a step law over the checkpoints, ``α`` shared by the validation
   domains, predicts the losses at ``target_step``;
2. across sizes: one size law over every (mixture, validation domain) curve with a single
   shared ``α`` predicts the losses at ``target_size``;
3. the result is a table at (``target_step``, ``target_size``) for :class:`DataMixingLaw`.

Deviation: the authors fit an implicit MLP law (``pipeline/mixlaw.py``) on the aggregated loss
in step 3; here the explicit per-domain law is fitted on the extrapolated table by default, and
:class:`mixstream.laws.implicit.ImplicitMixingLaw` is the authors' choice as an option
(:func:`mixstream.laws.implicit.compare_laws` reports both laws' held-out errors).

Robustness: the size law extrapolates far (e.g. 70M…410M to 1B) and its multi-start fit can
land in different optima with different seeds (moves of up to 0.1 in the predicted loss were
measured on the authors' RedPajama runs). :func:`extrapolate_sizes` therefore fits
``restarts`` times with different seeds, keeps the fit with the lowest selection loss and
records the spread of the restarts' predictions (``LawTable.spread``) — a spread comparable to
the differences between mixtures means the extrapolation cannot rank them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from mixstream.laws.scaling import (
    SIZE_LAW,
    STEP_LAW,
    TOKENS_PER_STEP,
    PowerLawSettings,
    fit_shared_alpha_power_law,
)
from mixstream.laws.table import LawTable, TableError


def _mix_key(r: np.ndarray) -> tuple:
    return tuple(np.round(r, 9).tolist())


def _fmt(r: tuple, names: tuple[str, ...]) -> str:
    return ",".join(f"{n}={v:g}" for n, v in zip(names, r))


def extrapolate_steps(table: LawTable, target_step: int, *,
                      settings: PowerLawSettings = STEP_LAW,
                      tokens_per_step: int = TOKENS_PER_STEP,
                      step_range: tuple[int, int] | None = None, seed: int = 0) -> LawTable:
    """One row per (size, mixture) with the step law's losses at ``target_step``."""
    if table.steps is None:
        raise TableError(f"{table.source}: extrapolating to a step needs a 'step' column")
    if target_step <= 0:
        raise ValueError(f"target step must be > 0, got {target_step}")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in range(len(table)):
        size = None if table.sizes is None else float(table.sizes[i])
        groups[(size, _mix_key(table.mixtures[i]))].append(i)
    mix, loss, sizes = [], [], []
    for (size, key), idx in groups.items():
        rows = sorted(idx, key=lambda i: int(table.steps[i]))  # type: ignore[index]
        steps = np.array([int(table.steps[i]) for i in rows])  # type: ignore[index]
        if step_range is not None:
            keep = (steps >= step_range[0]) & (steps <= step_range[1])
            rows, steps = [r for r, k in zip(rows, keep) if k], steps[keep]
        where = _fmt(key, table.train_domains) + ("" if size is None else f" size={size:g}")
        if len(rows) - settings.valid_split < 3:
            raise TableError(f"{table.source}: run {where} has {len(rows)} checkpoints in range; "
                             f"the step law needs >= {settings.valid_split + 3} (it holds out "
                             f"{settings.valid_split})")
        fit = fit_shared_alpha_power_law(steps * float(tokens_per_step), table.losses[rows], settings, seed)
        mix.append(table.mixtures[rows[0]])
        loss.append(fit.predict(float(target_step) * tokens_per_step))
        sizes.append(size)
    return LawTable(table.train_domains, table.val_domains, np.array(mix), np.array(loss),
                    steps=np.full(len(mix), target_step, dtype=np.int64),
                    sizes=None if table.sizes is None else np.array(sizes, dtype=np.float64),
                    source=f"{table.source} (step law -> {target_step})")


def extrapolate_sizes(table: LawTable, target_size: float, *,
                      settings: PowerLawSettings = SIZE_LAW, seed: int = 0, restarts: int = 3,
                      progress: Callable[[str], None] | None = None) -> LawTable:
    """One row per mixture with the size law's losses at ``target_size``.

    Needs one row per (mixture, size) — extrapolate or select steps first — and every mixture
    at every size. The law is fitted ``restarts`` times (seeds ``seed, seed+1, ...``); the best
    selection loss wins and ``spread`` holds max - min of the restarts' predictions.
    """
    if table.sizes is None:
        raise TableError(f"{table.source}: extrapolating to a size needs a 'model_size' column")
    if target_size <= 0:
        raise ValueError(f"target size must be > 0, got {target_size}")
    by_mix: dict[tuple, dict[float, int]] = defaultdict(dict)
    for i in range(len(table)):
        key, size = _mix_key(table.mixtures[i]), float(table.sizes[i])
        if size in by_mix[key]:
            raise TableError(f"{table.source}: mixture {_fmt(key, table.train_domains)} has "
                             f"several rows at size {size:g}; select one step or extrapolate "
                             f"steps first")
        by_mix[key][size] = i
    all_sizes = sorted({float(s) for s in table.sizes})
    for key, rows in by_mix.items():
        missing = [s for s in all_sizes if s not in rows]
        if missing:
            raise TableError(f"{table.source}: mixture {_fmt(key, table.train_domains)} lacks "
                             f"size(s) {missing}; every mixture needs every size (drop the "
                             f"mixture or the size)")
    if len(all_sizes) - settings.valid_split < 3:
        raise TableError(f"{table.source}: {len(all_sizes)} model sizes {all_sizes}; the size law "
                         f"needs >= {settings.valid_split + 3} (it holds out "
                         f"{settings.valid_split})")
    keys = list(by_mix)
    k = len(table.val_domains)
    y = np.stack([np.concatenate([table.losses[by_mix[key][s]] for key in keys])
                  for s in all_sizes])  # [n_sizes, n_mix * K]
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    fits, preds = [], []
    for j in range(restarts):
        if progress is not None:
            progress(f"size law: restart {j + 1}/{restarts} ({y.shape[1]} curves)")
        f = fit_shared_alpha_power_law(np.array(all_sizes), y, settings, seed + j)
        fits.append(f)
        preds.append(f.predict(float(target_size)).reshape(len(keys), k))
    best = int(np.argmin([f.selection_loss for f in fits]))
    pred = preds[best]
    spread = np.ptp(np.stack(preds), axis=0)
    mix = np.array([table.mixtures[by_mix[key][all_sizes[0]]] for key in keys])
    return LawTable(table.train_domains, table.val_domains, mix, pred,
                    steps=None if table.steps is None else
                    np.full(len(keys), int(table.steps[0]), dtype=np.int64),
                    sizes=np.full(len(keys), float(target_size)),
                    source=f"{table.source} (size law -> {target_size:g})", spread=spread)


def prepare_table(table: LawTable, *, step: int | None = None, size: float | None = None,
                  target_step: int | None = None, target_size: float | None = None,
                  step_settings: PowerLawSettings = STEP_LAW,
                  size_settings: PowerLawSettings = SIZE_LAW,
                  tokens_per_step: int = TOKENS_PER_STEP, seed: int = 0,
                  step_range: tuple[int, int] | None = None, size_restarts: int = 3,
                  progress: Callable[[str], None] | None = None) -> LawTable:
    """Select (``step``, ``size``) and/or extrapolate (``target_step``, ``target_size``).

    ``step_range=(lo, hi)`` fits the step law only on checkpoints with ``lo <= step <= hi``
    (early checkpoints often do not follow a power law).

    The result has one row per mixture, ready for :meth:`DataMixingLaw.fit`; a table that
    still mixes several steps or sizes raises :class:`TableError` saying which option to give.
    """
    if step is not None and target_step is not None:
        raise ValueError("give either step (select) or target_step (extrapolate), not both")
    if size is not None and target_size is not None:
        raise ValueError("give either model size (select) or target size (extrapolate), not both")
    t = table.select(step=step, size=size)
    if target_step is not None:
        if progress is not None:
            progress(f"step law: extrapolating every run to step {target_step}")
        t = extrapolate_steps(t, target_step, settings=step_settings,
                              tokens_per_step=tokens_per_step, step_range=step_range, seed=seed)
    elif step_range is not None:
        raise ValueError("step_range applies to the step law; give target_step too")
    if target_size is not None:
        t = extrapolate_sizes(t, target_size, settings=size_settings, seed=seed,
                              restarts=size_restarts, progress=progress)
    for name, col, opt in (("step", t.steps, "--step / --target-step"),
                           ("model_size", t.sizes, "--model-size / --target-size")):
        if col is not None and len(set(col.tolist())) > 1:
            raise TableError(f"{table.source}: rows have several values of {name} "
                             f"{sorted(set(col.tolist()))}; choose one with {opt}")
    return t
