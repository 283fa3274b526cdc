"""Hugging Face ``Trainer`` (transformers >= 5) on a :class:`~mixstream.MixLoader`.

The user's script changes one class name and passes the loader::

    from mixstream.integrations.hf import MixTrainer
    trainer = MixTrainer(model=model, args=args, train_loader=loader)
    trainer.train(resume_from_checkpoint=...)   # Trainer's default arguments

What :class:`MixTrainer` does, and why:

* **Data**: ``get_train_dataloader`` returns the MixLoader itself. Trainer's own loader would
  collate the stream's samples again and ``accelerator.prepare`` would shard them across ranks,
  but MixStream already gives every rank its own disjoint batches.
* **Resume**: the stream's state (position, weight log, attached controllers) is written into
  every ``checkpoint-N/`` (``mixstream_rank{r}.pt``, one per rank) before Trainer writes its
  own files, and loaded back in :meth:`train`. Trainer's fast-forward (``skip_first_batches``,
  which replays batches through a new DataLoader) is switched off with
  ``args.ignore_data_skip = True``: the stream continues from its restored position instead.
  The RNG states are restored after the loader's iterator exists (creating one draws from
  torch's RNG), so dropout masks match the uninterrupted run too.
* **Controllers** (every :class:`~mixstream.controllers.base.Controller` attached to the stream)
  get ``feedback`` after each optimizer step, on every rank: per-sequence losses from the
  logits of the forward Trainer already ran (causal shift; padding, ``-100`` labels,
  ``loss_mask`` and packed-document boundaries excluded, :mod:`mixstream.losses`) with their
  token counts, so both sequence- and token-weighted means are exact. With
  ``gradient_accumulation_steps = k`` a controller sees one call per optimizer step holding
  the sequences of all ``k`` micro-batches, with losses from the forward passes of that step
  (before the update).
* **Columns**: ``domain``, ``index`` and other columns the model's ``forward`` does not take are
  dropped before the model call; ``labels`` are made from ``input_ids`` when the batch has none
  (``-100`` where no target counts, so Trainer's loss and the controllers' losses count the
  same tokens); integer token columns are cast to int64.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..loader import MixLoader
from ..losses import batch_losses, target_mask
from . import _feedback

STATE_FILE = "mixstream_rank{rank}.pt"
# batch columns the trainer reads but the model never takes
META_COLUMNS = ("domain", "index", "loss_mask", "document_ids")
TOKEN_COLUMNS = ("input_ids", "labels", "attention_mask", "loss_mask", "document_ids")


class MixTrainer(Trainer):
    """A ``transformers.Trainer`` that trains on ``train_loader`` (a MixLoader).

    All other arguments are Trainer's. ``args.max_steps`` must be set (a stream has no length);
    ``per_device_train_batch_size`` is taken from the loader; workers, prefetching and pinning
    are the MixLoader's (``args.dataloader_*`` do not apply to it).
    """

    def __init__(self, *args: Any, train_loader: MixLoader, **kwargs: Any) -> None:
        if not isinstance(train_loader, MixLoader):
            raise TypeError(f"train_loader must be a mixstream.MixLoader, got "
                            f"{type(train_loader).__name__}")
        if kwargs.get("train_dataset") is not None:
            raise ValueError("MixTrainer trains on train_loader; do not pass train_dataset too")
        super().__init__(*args, **kwargs)
        self.train_loader = train_loader
        self.stream = train_loader.stream
        # the stream restores its own position: Trainer's replaying skip must not run
        self.args.ignore_data_skip = True
        bsz = self.stream.batch_size
        assert bsz is not None  # MixLoader binds it
        self.args.per_device_train_batch_size = bsz
        self._train_batch_size = self.args.train_batch_size
        self._losses = _feedback.StepLosses()
        self._start: tuple[int, int] = (0, 0)  # (stream batches, global step) when train() began
        self._forward_args: set[str] | None = None
        self._rng_checkpoint: str | None = None
        self._checked = False
        # first: a user's on_step_end callback sees the step's feedback already applied
        self.callback_handler.callbacks.insert(0, _MixCallback(self))

    # -- data ----------------------------------------------------------------------------
    def get_train_dataloader(self) -> MixLoader:  # type: ignore[override]
        return self.train_loader

    # -- checkpoints ---------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None,  # type: ignore[override]
              **kwargs: Any) -> Any:
        """``Trainer.train``; with a checkpoint, the stream (and its controllers) continue from
        the position saved in it."""
        ckpt = resume_from_checkpoint
        if ckpt is True:
            ckpt = get_last_checkpoint(self.args.output_dir)
            if ckpt is None:
                raise ValueError(f"No valid checkpoint found in output directory "
                                 f"({self.args.output_dir})")
        if ckpt:
            ckpt = str(ckpt)
            self.train_loader.load_state_dict(self._read_state(ckpt))
        return super().train(resume_from_checkpoint=ckpt or None, **kwargs)

    def _read_state(self, ckpt: str) -> dict[str, Any]:
        own = os.path.join(ckpt, STATE_FILE.format(rank=self.args.process_index))
        path = own if os.path.isfile(own) else os.path.join(ckpt, STATE_FILE.format(rank=0))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{ckpt} has no mixstream state ({os.path.basename(own)}): it "
                                    f"was not written by MixTrainer, or the save was interrupted; "
                                    f"resume from an earlier checkpoint")
        return torch.load(path, weights_only=True)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        # written before Trainer's own files: a checkpoint with trainer_state.json has it too
        folder = os.path.join(self._get_output_dir(trial=trial),
                              f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        os.makedirs(folder, exist_ok=True)
        self.train_loader.trained_batches = self._trained_batches()
        path = os.path.join(folder, STATE_FILE.format(rank=self.args.process_index))
        torch.save(self.train_loader.state_dict(), path + ".tmp")
        os.replace(path + ".tmp", path)
        super()._save_checkpoint(model, trial)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        # Trainer restores the RNG states before ``iter(train_dataloader)``, and creating a
        # DataLoader iterator draws a seed from torch's global RNG: the resumed run would see
        # other dropout masks than the uninterrupted one. Restore after the first fetch instead
        # (where Trainer itself restores them after skipping batches).
        self._rng_checkpoint = checkpoint

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        out = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not self._checked:  # the stream reads its rank when iteration starts
            _check_topology(self.stream, self.args.process_index, self.args.world_size)
            self._checked = True
        if self._rng_checkpoint is not None:
            checkpoint, self._rng_checkpoint = self._rng_checkpoint, None
            super()._load_rng_state(checkpoint)
        return out

    def _trained_batches(self) -> int:
        """Stream batches behind the optimizer steps taken (Trainer fetches a step's micro-batches
        before training them; nothing beyond)."""
        batches, step = self._start
        return batches + (self.state.global_step - step) * self.args.gradient_accumulation_steps

    # -- loss and controller feedback ----------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        batch = _long_tokens(inputs)
        loss, outputs = super().compute_loss(model, self._model_inputs(model, batch),
                                             return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if model.training and "domain" in batch:
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
            with torch.no_grad():
                per_seq, tokens = batch_losses(logits.detach(), batch)
            self._losses.add(batch["domain"], per_seq, tokens)
        return (loss, outputs) if return_outputs else loss

    def _model_inputs(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        if self._forward_args is None:
            forward = self.accelerator.unwrap_model(model).forward
            self._forward_args = {
                n for n, p in inspect.signature(forward).parameters.items()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        keep = self._forward_args if self.args.remove_unused_columns else None
        out = {k: v for k, v in batch.items()
               if k not in META_COLUMNS and (keep is None or k in keep)}
        if "labels" not in batch and "input_ids" in batch:
            out["labels"] = _labels(batch)
        return out

    def _after_optimizer_step(self) -> None:
        self._losses.flush(_feedback.controllers(self.stream))

    def _on_train_begin(self) -> None:
        for ctrl in _feedback.controllers(self.stream):
            _feedback.check_supported(ctrl, "Hugging Face Trainer")
        self._start = (self.stream.consumed_batches, self.state.global_step)
        self._checked = False


class _MixCallback(TrainerCallback):
    """Trainer calls callbacks at the points the stream needs: training start and right after
    each optimizer step (before that step's checkpoint)."""

    def __init__(self, trainer: MixTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._on_train_begin()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._after_optimizer_step()


def _long_tokens(batch: dict[str, Any]) -> dict[str, Any]:
    """Integer token columns as int64 (embeddings and cross-entropy take nothing else)."""
    out = dict(batch)
    for key in TOKEN_COLUMNS:
        v = out.get(key)
        if isinstance(v, torch.Tensor) and not v.dtype.is_floating_point and v.dtype not in (
                torch.int64, torch.bool):
            out[key] = v.long()
    return out


def _labels(batch: dict[str, Any]) -> torch.Tensor:
    """Causal-LM labels for a batch without them: ``input_ids`` with ``-100`` on every target
    :mod:`mixstream.losses` does not count (padding, ``loss_mask == 0``, a new document)."""
    ids = batch["input_ids"]
    _, counted = target_mask(ids, loss_mask=batch.get("loss_mask"),
                             attention_mask=batch.get("attention_mask"),
                             document_ids=batch.get("document_ids"))
    labels = torch.full_like(ids, -100)
    labels[:, 1:] = torch.where(counted, ids[:, 1:], labels[:, 1:])
    return labels


def _check_topology(stream: Any, rank: int, world_size: int) -> None:
    if (stream.rank, stream.world_size) != (rank, world_size):
        raise RuntimeError(f"the MixStream reads as rank {stream.rank} of {stream.world_size} but "
                           f"Trainer runs as rank {rank} of {world_size}: ranks would train on "
                           f"the same data: pass the right rank= and world_size= to MixStream, or "
                           f"none (they are read from torch.distributed or RANK/WORLD_SIZE)")
