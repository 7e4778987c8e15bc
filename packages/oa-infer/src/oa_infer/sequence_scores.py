"""Scores of a sequence classifier (reward model, classifier), read at the last token of every sequence.

One code path for training and inference. A batch is padded (``attention_mask`` (B, S); right or left
padding) or packed (``position_ids`` restarting at 0 for every sequence, no 2-D mask: transformers keeps the
sequences apart). The score head (a decoder's ``score``) runs on every position; the score of a sequence is
its head output at its own last token — never at a pad or at a token of the next sequence, and independent of
which token id pads (Hugging Face's own pooling looks for the last token that is not ``pad_token_id``, which
reads the wrong position when pad and eos share an id).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from oa_core.errors import OAError

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def batch_sequences(sequences: Sequence[Sequence[int]], pad_id: int, *, packed: bool = False,
                    padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Model inputs for token sequences: one packed row (``input_ids``, ``position_ids`` of shape (1, T)), or
    a padded batch (``input_ids``, ``attention_mask``, ``position_ids`` of shape (N, S), pads on
    ``padding_side``; positions count real tokens only, so left padding shifts nothing)."""
    if any(len(s) == 0 for s in sequences):
        raise OAError("an empty sequence cannot be scored", hint="drop empty texts before scoring")
    if packed:
        ids = [t for s in sequences for t in s]
        pos = [p for s in sequences for p in range(len(s))]
        return {"input_ids": torch.tensor([ids], dtype=torch.long), "position_ids": torch.tensor([pos], dtype=torch.long)}
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        span = slice(width - len(s), width) if padding_side == "left" else slice(0, len(s))
        ids[i, span] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, span] = 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def last_token_index(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) flat indices into the batch's (B·S) positions: the last token of every sequence, in order.

    Padded (a 2-D ``attention_mask``): the last position of each row whose mask is 1 (right or left padding).
    Packed (``position_ids``, no 2-D mask): a sequence ends right before the next position 0, or at the end of
    its row."""
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        width = mask.shape[1]
        columns = torch.arange(width, device=mask.device)
        last = torch.where(mask.bool(), columns, -1).amax(-1)
        if (last < 0).any():
            raise OAError("a sequence of the batch has no tokens (its attention mask is all 0)")
        return torch.arange(mask.shape[0], device=mask.device) * width + last
    positions = batch.get("position_ids")
    if positions is None:
        raise OAError("a batch to score needs attention_mask (padded) or position_ids (packed)")
    starts = positions == 0
    starts[:, 0] = True
    ends = torch.zeros_like(starts)
    ends[:, :-1] = starts[:, 1:]
    ends[:, -1] = True
    return ends.flatten().nonzero().squeeze(-1)


def score_head(model) -> torch.nn.Module:
    """The per-token score head of a (possibly DDP/DeepSpeed- or PEFT-wrapped) sequence classifier."""
    net = model
    while hasattr(net, "module") and isinstance(net.module, torch.nn.Module):  # DDP, DeepSpeed, FSDP wrappers
        net = net.module
    if hasattr(net, "get_base_model"):  # PEFT: its modules_to_save wrapper sits in the base model's place
        net = net.get_base_model()
    head = getattr(net, "score", None)
    if not isinstance(head, torch.nn.Module):
        raise OAError(f"model: {type(net).__name__} has no per-token score head ('score')",
                      hint="reward models and classifiers here are decoders loaded with model.type: seq_cls")
    return head


def sequence_scores(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, num_labels) scores of the N sequences of ``batch`` (see :func:`batch_sequences`), each read at its
    last token (:func:`last_token_index`), in the order of the sequences; with the model's gradients."""
    captured: list[torch.Tensor] = []
    hook = score_head(model).register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, use_cache=False)
    finally:
        hook.remove()
    if len(captured) != 1 or captured[0].dim() != 3:
        raise OAError("model: the score head did not run once on every position of the batch",
                      hint="reward models and classifiers here are decoders loaded with model.type: seq_cls")
    per_token = captured[0]  # (B, S, num_labels)
    return per_token.flatten(0, 1)[last_token_index(batch).to(per_token.device)]
