"""The controller interface: what a mixing algorithm needs, what it outputs, and its state.

A controller lives in the trainer's process, next to a :class:`~mixstream.MixStream`. The
training loop calls one method per optimizer step::

    mixer.feedback(batch["domain"], loss_per_seq)   # after the loss is known

``feedback`` sums the losses per domain, all-reduces the sums across ranks (so every rank
computes the same weights), lets the algorithm update, and appends new sampling weights to
the stream's weight log (``stream.set_weights``), which keeps runs deterministic and exactly
resumable. The controller registers itself with ``stream.attach(self)``, so its
``state_dict()`` travels inside ``stream.state_dict()``.

What a controller needs is declared in :class:`Requirements` (the trainer wires only what is
asked); what it outputs is sampling weights (pushed to the stream) and, for loss-reweighting
methods (DoReMi), per-domain loss weights (:meth:`Controller.loss_weights`).

The model-aware channels: gradient statistics (:class:`GradRequest`,
:meth:`Controller.observe_gradients`; FastMix, AC-ODM) and a phase hook with model access
(:meth:`Controller.run_phase`, given a :class:`mixstream.model.ModelContext`; OP-Mix).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ..feedback import StepFeedback, aggregate, all_reduce_sum, to_feedback
from .simplex import as_vector, scale_to_unit_sum, to_dict

if TYPE_CHECKING:  # the concrete model-access object lives in mixstream.model
    from ..model.context import ModelContext

#: every controller reports here: each weight decision and validation result at DEBUG (a
#: trainer sees why the mixture moved with ``logging.getLogger("mixstream").setLevel(DEBUG)``)
logger = logging.getLogger(__name__)


@runtime_checkable
class StreamLike(Protocol):
    """The part of :class:`~mixstream.MixStream` a controller uses."""

    domains: list[str]

    @property
    def weights(self) -> dict[str, float]: ...
    def set_weights(self, w: Mapping[str, float] | Sequence[float]) -> int: ...
    @property
    def consumed_batches(self) -> int: ...
    @property
    def consumed_samples(self) -> int: ...
    def domain_stats(self) -> dict[str, dict]: ...
    def attach(self, obj: Any) -> None: ...


@dataclass(frozen=True)
class GradRequest:
    """Per-domain gradient statistics a controller asks for (AC-ODM, FastMix)."""

    params: Sequence[str] | str = "all"   # parameter names, "lm_head", or "all"
    with_val: bool = False                # also the gradient of a validation/target batch
    returns: str = "gram"                 # "gram" ([K(+1)]^2 inner products) or "vectors"
    every: int = 1


@dataclass(frozen=True)
class Requirements:
    """What a controller needs from the trainer; the trainer wires only what is asked for."""

    train_losses: bool = False            # per-sample losses + domain ids every step
    loss_weighting: str = "sequence"      # how losses are averaged per domain: sequence|token
    per_token_losses: bool = False        # prefers [B, T] losses (+ mask) for exact clipping
    ref_losses: bool = False              # reference-model losses on the same batch (DoReMi)
    val_losses: bool = False              # per-domain validation losses on demand
    grads: GradRequest | None = None      # per-domain gradient statistics (FastMix, AC-ODM)
    phase_hook: bool = False              # run_phase(ctx) with model access (OP-Mix)
    min_microbatches_per_domain: int = 0  # AC-ODM: >=1 single-domain micro-batch per domain
    single_domain_microbatches: bool = False
    outputs_loss_weights: bool = False    # loss_weights() returns per-domain loss weights
    domain_sizes: bool = False            # reads stream.domain_stats() (static rules, ADO prior)


class Observer(Protocol):
    """Receives what a controller does (see :class:`mixstream.observe.MixLogger`)."""

    def on_step(self, step: int, consumed_samples: int, domains: Sequence[str],
                fb: StepFeedback) -> None: ...
    def on_weights(self, step: int, from_sample: int, weights: Mapping[str, float],
                   kind: str = "sampling") -> None: ...
    def on_validation(self, step: int, losses: Mapping[str, float]) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Controller:
    """Base class of every mixing controller (one controller type per module).

    Subclasses implement :meth:`update` (and, if they use validation losses,
    :meth:`wants_validation` / :meth:`update_validation`), plus ``_state`` / ``_load_state``
    for their own state. Weights are float64 vectors in ``stream.domains`` order.

    ``validate``: optional zero-argument callable returning per-domain validation losses (see
    :func:`mixstream.validation.per_domain_loss`); called inside :meth:`feedback` whenever the
    controller asks for validation. Without it, check :meth:`wants_validation` yourself and call
    :meth:`observe_validation`. Call ``feedback`` after ``optimizer.step()`` when a controller
    uses validation, so the evaluation sees the updated model.

    Create controllers after the ``MixLoader`` (controllers that set weights at construction,
    such as :class:`~.static.StaticMixture`, need the stream's batch size) and before
    ``stream.load_state_dict(...)`` when resuming (the checkpoint restores the weight log and
    the controller state, superseding any weights pushed at construction).
    """

    requires: ClassVar[Requirements] = Requirements()
    #: how the controller's state follows a change of the domain set (a checkpoint loaded into
    #: a stream with other domains, ``stream.add_domains``): the per-domain arrays of
    #: ``_state()`` and how a new domain's entry starts ("mean" of the kept ones, "zero", or a
    #: number). None: the controller cannot carry its state over (create it after loading).
    domain_state: ClassVar[Mapping[str, str | float] | None] = None

    def __init__(self, stream: StreamLike, *, observer: Observer | None = None,
                 validate: Callable[[], Mapping[str, float]] | None = None,
                 attach: bool = True) -> None:
        self.stream = stream
        self.domains: list[str] = list(stream.domains)
        self.K = len(self.domains)
        if self.K < 1:
            raise ValueError("the stream has no domains")
        self.step = 0
        self._weights = scale_to_unit_sum(as_vector(stream.weights, self.domains, "stream.weights"))
        self.observer = observer
        self.validate = validate
        # names of the validation sets: one per training domain unless a controller takes
        # target sets that are not training domains (Aioli's ``targets``)
        self.val_names: list[str] = list(self.domains)
        self.last_from_sample: int | None = None
        if attach:
            stream.attach(self)
        if observer is not None:  # the plot starts from the first "initial" record of a log
            observer.on_weights(0, 0, self.weights, kind="initial")

    # ----------------------------------------------------------------- outputs
    @property
    def weights(self) -> dict[str, float]:
        """Current sampling weights (the last ones this controller pushed or started from)."""
        return to_dict(self._weights, self.domains)

    @property
    def weight_vector(self) -> np.ndarray:
        return self._weights.copy()

    def loss_weights(self) -> dict[str, float] | None:
        """Per-domain loss weights (sum 1), or None if the controller only sets sampling weights."""
        return None

    def final_weights(self) -> dict[str, float]:
        """Mixture to use for a target run (proxy methods: the time average). Default: current."""
        return self.weights

    # ------------------------------------------------------------------ inputs
    def feedback(self, domain: torch.Tensor | None = None, loss: torch.Tensor | None = None, *,
                 mask: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                 ref_loss: torch.Tensor | None = None) -> dict[str, float] | None:
        """One optimizer step's feedback; returns the new sampling weights if they changed.

        ``domain``: ``batch["domain"]`` (ids into ``stream.domains``). ``loss``: per-sequence
        ``[B]`` losses (optionally ``tokens`` [B] loss tokens per sequence) or per-token
        ``[B, T]`` losses with ``mask`` [B, T]. Detached internally. Under torch.distributed
        every rank must call ``feedback`` at every step (it all-reduces).
        """
        req = self.requires
        if req.train_losses and (loss is None or domain is None):
            raise ValueError(f"{type(self).__name__} needs per-sample losses: call "
                             f"feedback(batch['domain'], loss_per_sequence)")
        if req.ref_losses and ref_loss is None:
            raise ValueError(f"{type(self).__name__} needs reference losses: pass ref_loss=... or "
                             f"give the controller a reference model")
        if domain is None:
            sums = torch.zeros(5, self.K, dtype=torch.float64)
        else:
            sums = aggregate(domain, self.K, loss, mask=mask, tokens=tokens, ref_loss=ref_loss)
        sums = all_reduce_sum(sums)
        self.step += 1
        fb = to_feedback(self.step, sums, has_loss=loss is not None, has_ref=ref_loss is not None,
                         has_tokens=tokens is not None or (loss is not None and loss.dim() == 2))
        new = self.update(fb)
        pushed = self._push(new) if new is not None else None
        if self.observer is not None:
            self.observer.on_step(self.step, self.stream.consumed_samples, self.domains, fb)
        if self.validate is not None and self.wants_validation():
            pushed = self.observe_validation(self.validate()) or pushed
        return pushed

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        """Consume one step's feedback; return new sampling weights or None (no change)."""
        raise NotImplementedError

    def wants_validation(self) -> bool:
        """True when the controller needs per-domain validation losses now."""
        return False

    def observe_validation(self, losses: Mapping[str, float] | Sequence[float]
                           ) -> dict[str, float] | None:
        """Give validation losses (one per :attr:`val_names`: the domains, or the controller's
        target sets); returns new sampling weights if they changed."""
        names = self.val_names
        vec = as_vector(losses, names, "validation losses") if isinstance(
            losses, Mapping) else np.asarray(losses, dtype=np.float64)
        if vec.shape != (len(names),) or not np.all(np.isfinite(vec)):
            raise ValueError(f"validation losses must be {len(names)} finite values for "
                             f"{names}, got {np.asarray(vec).tolist()}")
        logger.debug("%s step %d: validation losses %s", type(self).__name__, self.step,
                     _fmt(to_dict(vec, names)))
        if self.observer is not None:
            self.observer.on_validation(self.step, to_dict(vec, names))
        new = self.update_validation(vec)
        return self._push(new) if new is not None else None

    def update_validation(self, losses: np.ndarray) -> np.ndarray | None:
        raise ValueError(f"{type(self).__name__} does not use validation losses")

    def observe_gradients(self, stats: Mapping[str, Any]) -> None:
        """Per-domain gradient statistics (see :class:`GradRequest`); overridden by the
        controllers that declare a gradient request (FastMix, AC-ODM)."""
        raise NotImplementedError(f"{type(self).__name__} does not use gradient statistics")

    def run_phase(self, ctx: ModelContext) -> None:
        """Phase hook with model access; overridden by controllers that run probes (OP-Mix)."""
        raise NotImplementedError(f"{type(self).__name__} has no phase hook")

    # -------------------------------------------------------------- internals
    def _push(self, w: np.ndarray) -> dict[str, float] | None:
        w = scale_to_unit_sum(as_vector(w, self.domains, f"{type(self).__name__} weights"))
        if np.array_equal(w, self._weights):
            logger.debug("%s step %d: weights unchanged", type(self).__name__, self.step)
            return None
        self.last_from_sample = int(self.stream.set_weights(to_dict(w, self.domains)))
        self._weights = w
        out = to_dict(w, self.domains)
        logger.debug("%s step %d: sampling weights %s from sample %d", type(self).__name__,
                     self.step, _fmt(out), self.last_from_sample)
        if self.observer is not None:
            self.observer.on_weights(self.step, self.last_from_sample, out)
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only (JSON-able), so any checkpoint format can hold it."""
        state = {"controller": type(self).__name__, "domains": list(self.domains),
                 "step": self.step, "weights": self._weights.tolist(),
                 "last_from_sample": self.last_from_sample, "state": self._state()}
        if self.observer is not None:
            state["observer"] = self.observer.state_dict()
        return state

    def remap_state(self, state: Mapping[str, Any], old: list[str],
                    new: list[str]) -> dict[str, Any]:
        """``state`` (taken over ``old`` domains) for the domain set ``new``: kept domains keep
        their statistics, new ones start as :attr:`domain_state` says, retired ones are dropped;
        the sampling weights of kept domains keep their proportions, new ones get their mean.
        This controller then serves ``new``."""
        name = type(self).__name__
        if self.domain_state is None:
            raise ValueError(f"{name} cannot carry its state into another domain set ({old} -> "
                             f"{new}); create it after loading the checkpoint to start it fresh")
        index = [old.index(n) if n in old else -1 for n in new]

        def remap(values: Any, rule: str | float) -> list[float]:
            arr = np.asarray(values, dtype=np.float64)
            kept = [arr[i] for i in index if i >= 0]
            fill = (float(np.mean(kept)) if rule == "mean" and kept else
                    0.0 if rule in ("mean", "zero") else float(rule))
            return [float(arr[i]) if i >= 0 else fill for i in index]

        out = dict(state)
        out["domains"] = list(new)
        w = np.asarray(remap(state["weights"], "mean"))
        out["weights"] = (w / w.sum()).tolist() if w.sum() > 0 else [1.0 / len(new)] * len(new)
        sub = dict(state["state"])
        for key, rule in self.domain_state.items():
            sub[key] = remap(sub[key], rule)
        out["state"] = sub
        self.domains, self.K = list(new), len(new)
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        name = type(self).__name__
        if state.get("controller") != name:
            raise ValueError(f"state is for controller {state.get('controller')!r}, not {name!r}; "
                             f"create the same controller type before loading")
        if list(state["domains"]) != self.domains:
            raise ValueError(f"state domains {state['domains']} != stream domains {self.domains}")
        self.step = int(state["step"])
        self._weights = np.asarray(state["weights"], dtype=np.float64)
        lfs = state.get("last_from_sample")
        self.last_from_sample = None if lfs is None else int(lfs)
        self._load_state(state["state"])
        if self.observer is not None and "observer" in state:
            self.observer.load_state_dict(state["observer"])

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        pass


def _fmt(values: Mapping[str, float]) -> str:
    """``{"web": 0.5, "code": 0.5}`` -> ``web=0.5 code=0.5`` (compact log lines)."""
    return " ".join(f"{k}={v:.4g}" for k, v in values.items())
