"""Model access for model-aware mixing controllers (AC-ODM, FastMix, OP-Mix).

:class:`ModelContext` wraps the trainer's ``model`` and ``loss_fn(model, batch) -> per-sample
loss``: per-domain gradient Gram matrices on chosen parameters, per-domain validation losses,
clones, LoRA adapters on frozen copies, and merged adapter deltas.
"""

from mixstream.model.context import ModelContext
from mixstream.model.grads import (
    DomainGradRecorder,
    DomainGrads,
    GradGram,
    domain_grads,
    grad_gram,
    val_losses,
)
from mixstream.model.lora import LoRAAdapter, find_linear_modules, train_lora
from mixstream.model.merge import applied, merge_adapters, merged_copy
from mixstream.model.params import select_params

__all__ = [
    "DomainGradRecorder", "DomainGrads", "GradGram", "LoRAAdapter", "ModelContext", "applied", "domain_grads",
    "find_linear_modules", "grad_gram", "merge_adapters", "merged_copy", "select_params",
    "train_lora", "val_losses",
]
