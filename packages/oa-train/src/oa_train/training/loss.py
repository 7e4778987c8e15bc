"""Token-level cross-entropy, normalised by the GLOBAL number of supervised tokens of an optimizer step.

Each micro-batch contributes ``sum of its token losses / N`` where ``N`` counts the supervised tokens of
all micro-batches of the step on all processes. The summed gradient then equals the gradient of the mean
loss over every supervised token of the step, so ``gradient_accumulation_steps=k`` gives the same update
as a k-times larger batch, and 2 processes the same as one with twice the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oa_core.errors import OAError
from oa_train.training.batching import IGNORE


def model_inputs(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without labels; a 4D boolean mask (PoSE rows) becomes what the attention implementation
    takes: kept for sdpa, additive float for eager, refused for kernels that only read position ids."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 4:
        config = getattr(getattr(model, "module", model), "config", None)
        impl = getattr(config, "_attn_implementation", None) or "eager"
        if impl == "eager":
            dtype = next(getattr(model, "module", model).parameters()).dtype
            inputs["attention_mask"] = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(dtype).min)
        elif impl != "sdpa":
            raise OAError(f"model.attn_implementation: PoSE position ids need sdpa or eager attention, not {impl}",
                          hint="set model.attn_implementation: sdpa, or drop data.pose")
    return inputs


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**model_inputs(model, batch), use_cache=False).logits


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target losses (float32) and whether the argmax was right, for supervised positions only."""
    targets = labels[:, 1:]
    keep = targets != IGNORE
    picked = logits[:, :-1][keep].float()
    wanted = targets[keep]
    return F.cross_entropy(picked, wanted, reduction="none"), picked.argmax(-1) == wanted


def uses_fused_loss(model) -> bool:
    """Whether the ``kernels.fused_linear_ce`` patch computes the loss inside the model's forward."""
    return hasattr(getattr(model, "module", model), "_oa_unfused_forward")


def loss_sum(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Summed token loss of a micro-batch and the number of correct argmax predictions.

    With the fused linear+CE patch the model returns the summed loss without ever building the logits, so
    there is no argmax: the count is NaN (accuracy is then not reported)."""
    if uses_fused_loss(model):
        out = model(**model_inputs(model, batch), labels=batch["labels"], num_items_in_batch=1, use_cache=False)
        return out.loss.float(), float("nan")
    losses, correct = token_losses(forward_logits(model, batch), batch["labels"])
    return losses.sum(), int(correct.sum())


def global_count(accelerator, local: int) -> int:
    """Sum of ``local`` over all processes."""
    t = torch.tensor([local], device=accelerator.device, dtype=torch.long)
    return int(accelerator.reduce(t, reduction="sum").item())
