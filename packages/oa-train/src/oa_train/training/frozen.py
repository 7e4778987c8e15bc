"""A frozen copy of the starting model: the reference of the DPO family (``reference.source: copy``) and of GRPO
(``beta`` > 0 without PEFT). It is placed as the policy is:

- one process, DDP, ZeRO-1/2: a deep copy of the built model (taken before the first update and before a resume
  loads other weights), moved to the device when first used;
- DeepSpeed ZeRO-3: the policy's parameters are partitioned from loading on, so there is nothing whole to copy:
  each process keeps its part of the starting weights (on the CPU); when first used, the model is built again from
  the config, given those parts and wrapped in an inference-only engine sharded like the policy (after
  ``accelerator.prepare`` completed the DeepSpeed config);
- FSDP: not supported (use ``reference.precompute``, a PEFT adapter, or ZeRO-3).

Either way it has its own label log-prob route (the fused LM head + loss routes through its own head).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from oa_core.errors import OAError
from oa_train.training.sharding import inference_engine, zero_stage


class FrozenModel:
    """The starting model, frozen; :meth:`ready` gives it placed for forward passes, with its label log-prob route.
    Every process calls it at the same point: under ZeRO-3 it loads the model and builds an engine, which needs all
    processes together (so not inside ``main_process_first``)."""

    def __init__(self, build: Callable[[], tuple[Any, Any]]):
        self._build = build
        self._ready: tuple[Any, Any] | None = None

    def ready(self) -> tuple[Any, Any]:
        """``(model, label_logprobs)``."""
        if self._ready is None:
            self._ready = self._build()
        return self._ready


def frozen_starting_model(run: Any, linear_ce: Any, model_options: dict | None = None, *, key: str) -> FrozenModel:
    """A :class:`FrozenModel` of ``run.model`` as built (not yet wrapped by accelerate). ``linear_ce``: the fused
    linear+CE function the policy's route uses (None on the logits route); ``model_options``: the objective's
    :meth:`model_options` (to build the model again under ZeRO-3); ``key``: the config key errors name."""
    from accelerate.utils import DistributedType

    acc = run.accelerator
    if acc.distributed_type == DistributedType.FSDP:
        raise OAError(f"{key}: a frozen copy of the model is not supported with FSDP sharding",
                      hint="use a DeepSpeed ZeRO-3 preset, train a PEFT adapter (the reference is the policy with its "
                      "adapters off), or for DPO/KTO set train.reference.precompute: true")
    if zero_stage(acc) != 3:
        ref, label_logprobs = _deep_copy(run.model, linear_ce)  # now: before the first update or a resume
        return FrozenModel(lambda: (ref.to(acc.device), label_logprobs))
    starting = _local_weights(run.model)  # now: the resized rows of added tokens are random, so are random_init's

    def build() -> tuple[Any, Any]:
        ref, label_logprobs = _built_again(run, linear_ce, model_options or {})
        _load_local_weights(ref, starting)
        return inference_engine(ref, acc), label_logprobs

    return FrozenModel(build)


def _deep_copy(model: Any, linear_ce: Any) -> tuple[Any, Any]:
    from oa_train.training.logprobs import LabelLogProbs

    head = model.get_output_embeddings()
    routed = head.__dict__.pop("forward", None)  # the routed head's bound forward does not deep-copy
    try:
        ref = copy.deepcopy(model)
    finally:
        if routed is not None:
            head.forward = routed
    ref.get_output_embeddings().__dict__.pop("_oa_label_route", None)  # routed afresh below, to the copy's head
    ref.requires_grad_(False).eval()
    return ref, LabelLogProbs.for_model(ref, linear_ce)


def _built_again(run: Any, linear_ce: Any, model_options: dict) -> tuple[Any, Any]:
    from oa_core.plugins import get_registry
    from oa_train.model import prepare_model
    from oa_train.training.logprobs import LabelLogProbs

    prepared = prepare_model(run.config, run.tokenizer, get_registry(), show_table=False, **model_options)
    ref = prepared.model.requires_grad_(False).eval()
    return ref, LabelLogProbs.for_model(ref, prepared.provides.get("linear_ce") if linear_ce is not None else None)


def _local_weights(model: Any) -> dict[str, torch.Tensor]:
    """A CPU copy of what this process holds of each parameter: its ZeRO-3 partition, or the whole tensor."""
    return {name: _local(p).detach().to("cpu", copy=True) for name, p in model.named_parameters()}


def _load_local_weights(model: Any, weights: dict[str, torch.Tensor]) -> None:
    """Write :func:`_local_weights` of the same build (same shapes, processes and partitioning) into ``model``."""
    for name, p in model.named_parameters():
        target = _local(p)
        saved = weights.get(name)
        if saved is None or saved.shape != target.shape:
            raise OAError(f"the reference model built again differs from the policy at {name}",
                          hint="report this as a bug; meanwhile use train.reference.precompute or ZeRO-2")
        with torch.no_grad():
            target.copy_(saved)


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.ds_tensor if hasattr(param, "ds_tensor") else param.data
