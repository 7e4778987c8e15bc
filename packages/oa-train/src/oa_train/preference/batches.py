"""Micro-batches of preference examples: every reply becomes one sequence ``prompt + reply`` (labels -100 on the
prompt), collated by :func:`oa_train.training.batching.collate` — right-padded rows, or with ``padding_free`` one
flattened row with position ids restarting at every sequence (no padding computed).

Pairs give the sequences ``chosen_1, rejected_1, chosen_2, ...``; KTO examples give their completions, and under
the ``kl_`` prefix the mismatched sequences of the KL estimate. Keys that are no model input: ``margin`` (pairs),
``desirable`` (KTO), ``ref_logps`` (cached reference log-probs, one per sequence of the example).
"""

from __future__ import annotations

import torch

from oa_train.training.batching import IGNORE, collate
from oa_train.training.logprobs import TokenLogProbs

MODEL_KEYS = ("input_ids", "labels", "attention_mask", "position_ids")


def sequence(prompt: list[int], ids: list[int], labels: list[int], packed: bool) -> dict:
    row = {"input_ids": [*prompt, *ids], "labels": [IGNORE] * len(prompt) + list(labels)}
    if packed:
        row["position_ids"] = list(range(len(row["input_ids"])))
    return row


def pair_batch(examples: list[dict], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    seqs = [sequence(ex["prompt_input_ids"], ex[f"{kind}_input_ids"], ex[f"{kind}_labels"], packed)
            for ex in examples for kind in ("chosen", "rejected")]
    batch = collate(seqs, pad_id)
    batch["margin"] = torch.tensor([float(ex.get("margin") or 0.0) for ex in examples])
    return batch


def unpaired_batch(examples: list[dict], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    batch = collate([sequence(ex["prompt_input_ids"], ex["completion_input_ids"], ex["completion_labels"], packed)
                     for ex in examples], pad_id)
    kl = collate([sequence(ex["prompt_input_ids"], ex["kl_input_ids"], ex["kl_labels"], packed) for ex in examples],
                 pad_id)
    batch |= {f"kl_{k}": v for k, v in kl.items()}
    batch["desirable"] = torch.tensor([bool(ex["label"]) for ex in examples])
    return batch


def model_part(batch: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The model inputs (and labels) of ``batch``, or of its ``prefix``-ed part."""
    return {k: batch[prefix + k] for k in MODEL_KEYS if prefix + k in batch}


def sequence_sums(tokens: TokenLogProbs, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs and supervised-token counts per sequence, in order: (S,), (S,)."""
    position_ids = inputs.get("position_ids")
    counts = TokenLogProbs(tokens.mask.float(), tokens.mask).per_sequence(position_ids)
    return tokens.per_sequence(position_ids), counts
