"""What an objective needs of how accelerate placed the policy. DeepSpeed ZeRO-3 partitions every parameter from
loading on (``zero3_init_flag``), so generation needs the whole weights gathered, and a second model (a frozen
reference) is loaded again and wrapped in an engine of its own: there is nothing whole to copy."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from copy import deepcopy
from typing import Any


def zero_stage(accelerator: Any) -> int | None:
    """The DeepSpeed ZeRO stage of the run (None without DeepSpeed)."""
    plugin = accelerator.state.deepspeed_plugin
    return None if plugin is None else plugin.zero_stage


def whole_weights(model: Any, accelerator: Any):
    """A context in which every process holds the policy's whole parameters (ZeRO-3: gathered, read-only; a no-op
    elsewhere). Generation needs it: the processes generate different numbers of tokens, so per-layer gathers
    would not line up across processes."""
    if zero_stage(accelerator) != 3:
        return nullcontext()
    return _gathered_without_hooks(model)


@contextmanager
def _gathered_without_hooks(engine: Any):
    """All parameters gathered, DeepSpeed's per-module fetch/release hooks off for the duration and registered
    again after (TRL 1.16's ``unwrap_model_for_generation``: the hooks would release what is gathered)."""
    import deepspeed

    offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None) or getattr(engine, "optimizer", None)
    hooked = hasattr(offload, "forward_hooks")  # not before the engine has its optimizer
    with deepspeed.zero.GatheredParameters(list(engine.parameters())):
        if hooked:
            for param in offload.module.parameters(recurse=True):
                param.ds_active_sub_modules.clear()
            for hook in [*offload.forward_hooks, *offload.backward_hooks]:
                hook.remove()
            offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            if hooked:
                coordinator = getattr(offload, "param_coordinator", None)
                if coordinator is not None and not coordinator.is_invalid_trace():
                    coordinator._invalidate_trace()
                offload._register_deepspeed_module(offload.module)


def inference_engine(model: Any, accelerator: Any) -> Any:
    """``model`` (frozen; under ZeRO-3 its parameters are partitioned already) in a DeepSpeed engine without an
    optimizer, in eval mode: sharded like the policy (TRL 1.16's ``prepare_deepspeed``). Every process must call it
    together; the run's DeepSpeed config must be complete (after ``accelerator.prepare``)."""
    import deepspeed

    config = deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config.get("zero_optimization", {}).pop("offload_optimizer", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine
