"""Lightning (>= 2.4) on a :class:`~mixstream.MixLoader`: one callback.

    from mixstream.integrations.lightning import MixStreamCallback
    trainer = L.Trainer(..., callbacks=[MixStreamCallback(loader)])
    trainer.fit(module, train_dataloaders=loader, ckpt_path=...)

What the callback does, and why:

* **Checkpoint position.** Lightning fetches one batch ahead of the one it trains on, so the
  loader has always fetched one batch more than was trained when a checkpoint is taken. After
  every trained batch the callback sets ``loader.trained_batches`` (before ``ModelCheckpoint``
  runs: Lightning calls checkpoint callbacks last), and the loader's state records that
  position; a resumed run gets the fetched-but-untrained batch first.
* **State in Lightning's checkpoints.** ``state_dict()`` of the callback is the loader's state
  (stream position, weight log, attached controllers), stored by Lightning under
  ``checkpoint["callbacks"]["MixStreamCallback"]`` and loaded before training restarts.
  (MixLoader is a stateful loader too, so Lightning also stores the same state with its loop
  state and loads it again before iterating; both copies are taken at the same moment.)
  Lightning saves rank 0's copy only; a stream's state is the same on every rank (the rank is
  re-read when iteration starts).
* **Controllers.** After each optimizer step (once per ``accumulate_grad_batches`` batches) every
  controller attached to the stream gets ``feedback`` with the step's sequences, on every rank.
  ``training_step`` hands over losses by returning a dict: ``{"loss": loss, "logits": logits}``
  (per-sequence losses are then computed from the logits and the batch: causal shift, padding,
  ``loss_mask`` and ``labels == -100`` excluded, :mod:`mixstream.losses`) or
  ``{"loss": loss, "per_sequence_loss": l, "tokens": n}`` (``tokens`` optional: the counted
  targets per sequence, for token-weighted controllers). Controllers that need no losses
  (``Schedule``, ``StaticMixture``) need neither.
* Lightning does not restore RNG states: with dropout the resumed model sees other masks than an
  uninterrupted run (the data is still identical; loss-driven controllers then drift).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from ..loader import MixLoader
from ..losses import batch_losses
from . import _feedback


class MixStreamCallback(pl.Callback):
    """Keeps a MixLoader's stream, its controllers and Lightning's checkpoints in step."""

    def __init__(self, loader: MixLoader) -> None:
        if not isinstance(loader, MixLoader):
            raise TypeError(f"MixStreamCallback needs the mixstream.MixLoader passed to "
                            f"trainer.fit, got {type(loader).__name__}")
        self.loader = loader
        self.stream = loader.stream
        self._losses = _feedback.StepLosses()
        self._base = 0      # stream position when this fit started
        self._trained = 0   # batches trained since
        self._step = 0      # trainer.global_step at the last feedback

    @property
    def state_key(self) -> str:
        return "MixStreamCallback"

    # -- Lightning's checkpoints ---------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loader.load_state_dict(state_dict["loader"])

    # -- training ------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for ctrl in _feedback.controllers(self.stream):
            _feedback.check_supported(ctrl, "Lightning")
        # callbacks' states are loaded before this hook, batches are fetched after it
        self._base = self.loader.trained_batches
        self._trained = 0
        self._step = trainer.global_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.train_dataloader is not None and not _drives(trainer, self.loader):
            raise RuntimeError("MixStreamCallback's loader is not the one trainer.fit trains on: "
                               "pass the same MixLoader to the callback and to trainer.fit")
        if (self.stream.rank, self.stream.world_size) != (trainer.global_rank, trainer.world_size):
            raise RuntimeError(f"the MixStream reads as rank {self.stream.rank} of "
                               f"{self.stream.world_size} but Lightning runs rank "
                               f"{trainer.global_rank} of {trainer.world_size}: ranks would train "
                               f"on the same data")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        ctrls = _feedback.controllers(self.stream)
        if ctrls:
            if outputs is not None:  # None: training_step skipped this batch (no loss to give)
                self._collect(outputs, batch, ctrls)
            if trainer.global_step != self._step:  # the optimizer stepped on this batch
                self._step = trainer.global_step
                self._losses.flush(ctrls)
        self._trained += 1
        self.loader.trained_batches = self._base + self._trained

    def _collect(self, outputs: Any, batch: Any, ctrls: list) -> None:
        out = outputs if isinstance(outputs, Mapping) else {}
        if "per_sequence_loss" in out:
            loss = out["per_sequence_loss"]
            tokens = out.get("tokens")
            if tokens is None:  # sequence-level losses only: every sequence counts once
                tokens = loss.new_ones(loss.shape, dtype=batch["domain"].dtype)
            self._losses.add(batch["domain"], loss, tokens)
        elif "logits" in out:
            loss, tokens = batch_losses(out["logits"].detach(), batch)
            self._losses.add(batch["domain"], loss, tokens)
        elif any(c.requires.train_losses for c in ctrls):
            names = [type(c).__name__ for c in ctrls if c.requires.train_losses]
            raise ValueError(f"{', '.join(names)} need per-sequence losses: return "
                             f"{{'loss': loss, 'logits': logits}} or {{'loss': loss, "
                             f"'per_sequence_loss': ..., 'tokens': ...}} from training_step")
        else:
            self._losses.add_domains(batch["domain"])


def _drives(trainer: pl.Trainer, loader: MixLoader) -> bool:
    """Whether ``loader`` is among the loaders Lightning iterates for training."""
    dl = trainer.train_dataloader
    flat = getattr(dl, "flattened", None)
    loaders = flat if flat is not None else [dl]
    return any(x is loader for x in loaders)
