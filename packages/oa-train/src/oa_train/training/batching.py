"""Data order and batching.

Order: one permutation per epoch from ``seed + epoch``, so step ``s`` always sees the same examples —
which is what makes resume exact and ``gradient_accumulation_steps`` interchangeable with batch size.
A *global* micro-batch has ``per_device_batch_size × num_processes`` examples; rank ``r`` takes slice
``r``. The last global batch of an epoch is filled by wrapping around (like ``DistributedSampler``);
wrapped examples are flagged so evaluation counts every example once.

Collation: unpacked examples are right-padded to the longest in the micro-batch (labels -100, with an
attention mask). If any example carries ``position_ids`` (packed rows), the micro-batch is flattened
into ONE row with the position ids restarting at every sample and no attention mask: transformers then
builds a block-diagonal causal mask (sdpa/eager/flex) or uses varlen kernels (flash attention), so
attention never crosses sample boundaries. transformers takes every position jump as a new sample, so rows
whose positions skip inside a sample (PoSE) also get an explicit boolean block-diagonal causal mask
``(1, 1, S, S)`` (samples start where the position is 0); ``logprobs.model_inputs`` adapts it to the
attention implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class Slot:
    index: int  # example index in the dataset
    counted: bool  # False for wrap-around fillers


def epoch_order(n: int, *, epoch: int, seed: int, shuffle: bool = True) -> list[int]:
    if not shuffle:
        return list(range(n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def micro_batches(
    n: int, *, batch_size: int, num_processes: int = 1, rank: int = 0, epoch: int = 0, seed: int = 0, shuffle: bool = True
) -> list[list[Slot]]:
    """This rank's micro-batches for one epoch (every rank gets the same number)."""
    if n == 0:
        return []
    order = epoch_order(n, epoch=epoch, seed=seed, shuffle=shuffle)
    global_bs = batch_size * num_processes
    out = []
    for b in range(math.ceil(n / global_bs)):
        start = b * global_bs + rank * batch_size
        out.append([Slot(order[p % n], p < n) for p in range(start, start + batch_size)])
    return out


def collate(examples: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Tensors for one micro-batch (see the module docstring for padded vs flattened rows)."""
    if any(ex.get("position_ids") is not None for ex in examples):
        ids, labels, pos = [], [], []
        for ex in examples:
            p = list(ex.get("position_ids") or range(len(ex["input_ids"])))
            lab = list(ex["labels"])
            # the first token of each sample is no target: its "previous token" belongs to another sample
            lab = [IGNORE if q == 0 else t for q, t in zip(p, lab, strict=True)]
            ids += list(ex["input_ids"])
            labels += lab
            pos += p
        as_row = lambda x: torch.tensor([x], dtype=torch.long)  # noqa: E731
        out = {"input_ids": as_row(ids), "labels": as_row(labels), "position_ids": as_row(pos)}
        if any(q != 0 and q != prev + 1 for prev, q in zip(pos, pos[1:], strict=False)):
            out["attention_mask"] = block_causal_mask(out["position_ids"][0])
        return out
    width = max(len(ex["input_ids"]) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        k = len(ex["input_ids"])
        input_ids[i, :k] = torch.as_tensor(ex["input_ids"])
        labels[i, :k] = torch.as_tensor(ex["labels"])
        mask[i, :k] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """Boolean ``(1, 1, S, S)`` mask: token i attends to j <= i of the same sample (a sample starts at
    position 0), whatever the positions do inside a sample."""
    seq = torch.cumsum(position_ids == 0, 0)
    same = seq[:, None] == seq[None, :]
    return (same & torch.ones_like(same).tril())[None, None]


def num_targets(batch: dict[str, torch.Tensor]) -> int:
    """Supervised next-token targets in a collated batch (labels shifted by one)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
