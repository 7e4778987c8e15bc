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

    The score is read at each sequence's last non-pad token (:func:`oa_infer.sequence_scores.sequence_scores`,
    the code training uses), so left padding, right padding and a pad id that is also a real token (pad = eos)
    give the same scores. Models without a ``score`` head over a backbone (e.g. BERT's pooled ``classifier``) are scored by
    their own forward with right padding.
    """
    import torch

    from oa_infer.sequence_scores import batch_sequences, sequence_scores

    encoder = PromptEncoder(tokenizer)
    encoded = [encoder.encode(x, add_generation_prompt=False) for x in inputs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    own_pooling = not isinstance(getattr(inner, "score", None), torch.nn.Module)
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    logits: list[Any] = [None] * len(encoded)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = batch_sequences([encoded[i] for i in idx], pad, padding_side="right" if own_pooling else padding_side)
            batch = {k: v.to(device) for k, v in batch.items()}
            if own_pooling:
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            else:
                out = sequence_scores(model, batch)
            for i, row in zip(idx, out.float().cpu(), strict=True):
                logits[i] = row
    return [_score(row, getattr(inner, "config", None)) for row in logits]


def _score(row, config) -> Score:
    if row.numel() == 1:
        return Score(score=float(row[0]))
    probs = row.softmax(-1)
    label = int(probs.argmax())
    names = getattr(config, "id2label", None) or {}
    name = names.get(label, names.get(str(label)))
    return Score(label=label, label_name=name if name and name != f"LABEL_{label}" else None, probs=probs.tolist())
