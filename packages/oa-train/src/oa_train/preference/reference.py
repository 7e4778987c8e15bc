"""The reference model of DPO and KTO: the policy's starting weights, as

- ``adapters_off``: the policy itself with its PEFT adapters disabled (no second model);
- ``copy``: a frozen copy of the starting model, taken before the first update
  (:mod:`oa_train.training.frozen`: placed as the policy is, sharded under ZeRO-3);
- precomputed: its log-probs, computed once and read from the cache (:mod:`oa_train.preference.cache`).

A reference returns the summed log-probs of each sequence of a batch, computed without gradients and in eval
mode (no dropout), through the same route (fused linear+CE or logits) as the policy.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager, nullcontext

import torch

from oa_train.preference.batches import sequence_sums


@contextmanager
def eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


class Reference:
    """``reference(policy, inputs) -> (S,)`` summed log-probs per sequence of ``inputs`` (model inputs + labels)."""

    def __init__(self, name: str, label_logprobs):
        self.name, self.label_logprobs = name, label_logprobs

    def model(self, policy):
        return policy

    def context(self, policy):
        return nullcontext()

    @torch.no_grad()
    def __call__(self, policy, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        model = self.model(policy)
        with self.context(policy), eval_mode(model):
            return sequence_sums(self.label_logprobs.tokens(model, inputs), inputs)[0]


class AdaptersOff(Reference):
    """The policy with its PEFT adapters disabled: the frozen base model."""

    def __init__(self, label_logprobs, accelerator):
        super().__init__("the policy with its adapters disabled", label_logprobs)
        self.accelerator = accelerator

    def context(self, policy):
        return self.accelerator.unwrap_model(policy).disable_adapter()


class Frozen(Reference):
    """A model of its own (a copy of the starting weights), or the policy before its first update."""

    def __init__(self, name: str, model, label_logprobs):
        super().__init__(name, label_logprobs)
        self.frozen = model

    def model(self, policy):
        return self.frozen


def weights_digest(model, frozen_only: bool) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the model's parameters and buffers (``frozen_only``:
    the parameters that do not train, i.e. what a PEFT model computes with its adapters off)."""
    h = hashlib.sha256()
    tensors = [(n, p) for n, p in model.named_parameters() if not (frozen_only and p.requires_grad)]
    tensors += list(model.named_buffers())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        with _gathered(tensor):
            data = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{data.dtype}:{tuple(data.shape)}\0".encode())
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextmanager
def _gathered(tensor):
    """A ZeRO-3 partitioned parameter gathered for reading (every process must call this)."""
    if not hasattr(tensor, "ds_id"):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([tensor]):
        yield
