"""Log-probabilities of label tokens, the quantity every method's loss is built from.

``labels`` follow Hugging Face's convention: ``labels[b, t]`` is the token at position ``t``, predicted from
positions ``< t``; -100 marks positions that are no target. Results are aligned with ``labels[:, 1:]``:
shape ``(B, S-1)``. Two routes give the same numbers (float32 tolerance):

- plain: the model's logits, log-softmax (float32) at the target rows only;
- fused: when a model patch provides ``linear_ce`` (:class:`oa_core.extensions.PatchResult`, e.g.
  ``kernels.fused_linear_ce``), the LM head computes the cross-entropy of the labels from the hidden states
  in chunks and never holds the full-vocabulary logits. The head's forward is routed while a request is
  pending, so the call still goes through the (possibly DDP/DeepSpeed/FSDP-wrapped) model's forward and
  the head's own module hooks (ZeRO-3 gathers its weight there).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oa_core.errors import OAError
from oa_train.training.batching import IGNORE


@dataclass
class TokenLogProbs:
    """Per-target log-probabilities of one batch, aligned with ``labels[:, 1:]``."""

    values: torch.Tensor  # (B, S-1) float32: log p(label), 0 where ``mask`` is False
    mask: torch.Tensor  # (B, S-1) bool: the position is a target
    correct: torch.Tensor | None = None  # (B, S-1) bool: the argmax is the label (plain route only)
    entropy: torch.Tensor | None = None  # (B, S-1) float32: entropy of the predicted distribution, 0 where ``mask``
    # is False, no gradients (plain route only)

    def sum(self) -> torch.Tensor:
        return self.values.sum()

    def per_sequence(self, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Summed log-probs per sequence: one per row, or with ``position_ids`` (B, S) of packed rows one per
        packed sequence (a sequence starts where its position is 0), in row-major order."""
        if position_ids is None:
            return self.values.sum(-1)
        starts = (position_ids == 0)
        starts[:, 0] = True
        sequence = torch.cumsum(starts.flatten(), 0).view_as(position_ids) - 1  # (B, S) sequence index
        target_seq = sequence[:, 1:]  # a target belongs to the sequence of its own position
        out = torch.zeros(int(sequence.max()) + 1, dtype=self.values.dtype, device=self.values.device)
        return out.index_add(0, target_seq.flatten(), self.values.flatten())


class _Route:
    """The pending request of a routed LM head: labels (B, S) shifted to the positions that predict them."""

    def __init__(self, linear_ce: Callable):
        self.linear_ce = linear_ce
        self.request: tuple[torch.Tensor, str, float] | None = None


def _routed_forward(self, hidden):
    route: _Route = self._oa_label_route
    if route.request is None:
        return F.linear(hidden, self.weight)
    labels, reduction, scale = route.request
    route.request = None
    if scale != 1.0:
        hidden = hidden * scale  # (h W^T) / T = (h / T) W^T: the logits at temperature T
    return route.linear_ce(hidden, self.weight, labels.to(hidden.device), reduction=reduction)


class LabelLogProbs:
    """Computes label log-probabilities of a model's batches (see the module docstring for the routes).

    ``LabelLogProbs()`` is the plain route. ``LabelLogProbs.for_model(model, linear_ce)`` routes the model's LM
    head through ``linear_ce`` when the head is a bias-free ``nn.Linear``; otherwise (e.g. a head wrapped by
    PEFT's ``modules_to_save`` or trainable tokens) it stays on the plain route and says why in ``route``.
    """

    def __init__(self, head: torch.nn.Module | None = None, route: str = "logits"):
        self.head, self.route = head, route

    @classmethod
    def for_model(cls, model, linear_ce: Callable | None) -> LabelLogProbs:
        if linear_ce is None:
            return cls()
        head = model.get_output_embeddings()
        if type(head) is not torch.nn.Linear or head.bias is not None:
            return cls(route=f"logits (the LM head is a {type(head).__name__}, the fused linear CE needs a plain "
                             "bias-free Linear)")
        if not hasattr(head, "_oa_label_route"):
            head._oa_label_route = _Route(linear_ce)
            head.forward = types.MethodType(_routed_forward, head)
        head._oa_label_route.linear_ce = linear_ce
        return cls(head, "fused linear cross-entropy (no logits)")

    @property
    def fused(self) -> bool:
        return self.head is not None

    @property
    def linear_ce(self) -> Callable | None:
        """The fused linear+CE function the head computes with (None on the logits route)."""
        return self.head._oa_label_route.linear_ce if self.fused else None

    def tokens(self, model, batch: dict[str, torch.Tensor], *, argmax: bool = False, temperature: float = 1.0,
               entropy: bool = False) -> TokenLogProbs:
        """Per-target log-probs of ``batch`` under the logits divided by ``temperature`` (the distribution that
        sampling at that temperature draws from). ``argmax``: also which targets the model predicts best;
        ``entropy``: also the entropy of each target's distribution — both need the logits, so ``argmax`` takes
        the plain route, and ``entropy`` is None on the fused route."""
        targets = batch["labels"][:, 1:]
        mask = targets != IGNORE
        if self.fused and not argmax:
            with self._request(batch["labels"], "none", 1.0 / temperature):
                out = model(**model_inputs(model, batch), use_cache=False).logits
            return TokenLogProbs(-out[:, :-1].float(), mask)
        logits = model(**model_inputs(model, batch), use_cache=False).logits
        picked = logits[:, :-1][mask].float()
        if temperature != 1.0:
            picked = picked / temperature
        wanted = targets[mask]
        values = torch.zeros(mask.shape, dtype=torch.float32, device=picked.device)
        values[mask] = -F.cross_entropy(picked, wanted, reduction="none")
        correct = None
        if argmax:
            correct = torch.zeros(mask.shape, dtype=torch.bool, device=picked.device)
            correct[mask] = picked.argmax(-1) == wanted
        entropies = None
        if entropy:
            with torch.no_grad():
                logp = picked.log_softmax(-1)
                entropies = torch.zeros(mask.shape, dtype=torch.float32, device=picked.device)
                entropies[mask] = -(logp.exp() * logp).sum(-1)
        return TokenLogProbs(values, mask, correct, entropies)

    def nll_sum(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The summed negative log-likelihood of the targets of ``batch`` and how many of them the argmax
        predicts (None on the fused route, which has no logits)."""
        if self.fused:
            with self._request(batch["labels"], "sum", 1.0):
                return model(**model_inputs(model, batch), use_cache=False).logits.float(), None
        logits = model(**model_inputs(model, batch), use_cache=False).logits
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        picked = logits[:, :-1][keep].float()
        wanted = targets[keep]
        return F.cross_entropy(picked, wanted, reduction="none").sum(), (picked.argmax(-1) == wanted).sum()

    @contextmanager
    def _request(self, labels: torch.Tensor, reduction: str, scale: float):
        route = self.head._oa_label_route
        route.request = (F.pad(labels[:, 1:], (0, 1), value=IGNORE), reduction, scale)
        try:
            yield
        finally:
            unserved, route.request = route.request is not None, None
        if unserved:
            raise OAError("the model's forward never called its LM head, so the fused linear CE could not run",
                          hint="drop kernels.fused_linear_ce from model.patches for this model")


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
