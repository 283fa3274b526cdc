"""Model access for model-aware mixing controllers (AC-ODM, FastMix, OP-Mix).

:class:`ModelContext` wraps the trainer's ``model`` and ``loss_fn(model, batch) -> per-sample
loss``: per-domain gradient Gram matrices on chosen parameters, per-domain validation losses,
clones, LoRA adapters on frozen copies, and merged adapter deltas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "ModelContext": ".context",
    "DomainGradRecorder": ".grads",
    "DomainGrads": ".grads",
    "GradGram": ".grads",
    "domain_grads": ".grads",
    "grad_gram": ".grads",
    "val_losses": ".grads",
    "LoRAAdapter": ".lora",
    "find_linear_modules": ".lora",
    "train_lora": ".lora",
    "applied": ".merge",
    "merge_adapters": ".merge",
    "merged_copy": ".merge",
    "select_params": ".params",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .context import ModelContext  # noqa: F401
    from .grads import (  # noqa: F401
        DomainGradRecorder,
        DomainGrads,
        GradGram,
        domain_grads,
        grad_gram,
        val_losses,
    )
    from .lora import LoRAAdapter, find_linear_modules, train_lora  # noqa: F401
    from .merge import applied, merge_adapters, merged_copy  # noqa: F401
    from .params import select_params  # noqa: F401

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
