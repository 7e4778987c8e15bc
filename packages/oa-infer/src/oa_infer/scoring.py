"""Scores of reward models and sequence classifiers, read at each sequence's last non-pad token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from oa_core.generation import Prompt
from oa_infer.prompts import PromptEncoder


@dataclass
class Score:
    """A reward model's scalar ``score`` (``num_labels == 1``: the raw head output), or a classifier's ``label``
    (the most likely one, with its name when the model's config gives one) and ``probs`` (softmax over labels)."""

    score: float | None = None
    label: int | None = None
    label_name: str | None = None
    probs: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def score(model: Any, tokenizer: Any, inputs: Sequence[Prompt], batch_size: int = 8, *,
          padding_side: Literal["left", "right"] = "left") -> list[Score]:
    """The score of every input (a text, or a conversation rendered whole with the tokenizer's chat template),
    in input order, ``batch_size`` sequences at a time (sorted by length).

    The head is applied to the hidden state of each sequence's last non-pad token, found from the attention
    mask, so left padding, right padding and a pad id that is also a real token (pad = eos) give the same
    scores. Models without a ``score`` head over a backbone (e.g. BERT's pooled ``classifier``) are scored by
    their own forward with right padding.
    """
    import torch

    encoder = PromptEncoder(tokenizer)
    encoded = [encoder.encode(x, add_generation_prompt=False) for x in inputs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(inner, "score", None)
    backbone = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    own_pooling = not isinstance(head, torch.nn.Module) or backbone is None
    side = "right" if own_pooling else padding_side
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    logits: list[Any] = [None] * len(encoded)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = _padded([encoded[i] for i in idx], pad, side, device)
            if own_pooling:
                out = model(input_ids=ids, attention_mask=mask).logits
            else:
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
                last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # the last position the mask marks real
                out = head(hidden[torch.arange(len(idx), device=device), last])
            for i, row in zip(idx, out.float().cpu(), strict=True):
                logits[i] = row
    return [_score(row, getattr(inner, "config", None)) for row in logits]


def _padded(rows: list[list[int]], pad: int, side: str, device):
    import torch

    width = max(len(r) for r in rows)
    fill = [[pad] * (width - len(r)) for r in rows]
    ones = [[1] * len(r) for r in rows]
    zeros = [[0] * (width - len(r)) for r in rows]
    if side == "left":
        ids, mask = [f + r for f, r in zip(fill, rows, strict=True)], [z + o for z, o in zip(zeros, ones, strict=True)]
    else:
        ids, mask = [r + f for f, r in zip(fill, rows, strict=True)], [o + z for z, o in zip(zeros, ones, strict=True)]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def _score(row, config) -> Score:
    if row.numel() == 1:
        return Score(score=float(row[0]))
    probs = row.softmax(-1)
    label = int(probs.argmax())
    names = getattr(config, "id2label", None) or {}
    name = names.get(label, names.get(str(label)))
    return Score(label=label, label_name=name if name and name != f"LABEL_{label}" else None, probs=probs.tolist())
