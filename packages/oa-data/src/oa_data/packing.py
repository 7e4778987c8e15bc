"""Best-fit-decreasing packing of samples into ``max_length`` bins, with per-sample position ids.

Packed samples restart ``position_ids`` at 0, so downstream attention (flash-attention varlen, flex or
block masks) sees where each sample starts; :func:`attention_mask_from_position_ids` builds the boolean
block-diagonal causal mask those kernels compute.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Any

import numpy as np

from oa_core.errors import OAError
from oa_data.tokenize import IGNORE_INDEX


def pack_bfd(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Sample indices grouped into bins of total length <= ``max_length`` (best fit decreasing: the
    longest sample first, each into the fullest bin it fits)."""
    for i, n in enumerate(lengths):
        if not 0 < n <= max_length:
            raise OAError(f"sample {i} has {n} tokens, packing needs 1..{max_length}",
                          hint="truncate samples to max_length before packing")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin id), sorted
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        k = bisect_left(free, (n, -1))
        if k == len(free):
            bins.append([i])
            left, b = max_length - n, len(bins) - 1
        else:
            left, b = free.pop(k)
            bins[b].append(i)
            left -= n
        if left > 0:
            insort(free, (left, b))
    return bins


def packing_efficiency(bins: Sequence[Sequence[int]], lengths: Sequence[int], max_length: int) -> float:
    """The fraction of bin slots filled with tokens (1.0: no padding)."""
    return sum(lengths[i] for b in bins for i in b) / (len(bins) * max_length) if bins else 0.0


def _field(example: Any, key: str) -> list[int]:
    return list(example[key] if isinstance(example, dict) else getattr(example, key))


def collate_packed(examples: Sequence[Any], bin: Sequence[int]) -> dict[str, list[int]]:
    """One packed row: ``input_ids``, ``labels`` (the first token of every sample unsupervised, so no
    loss term predicts across a boundary), ``position_ids`` restarting at 0 per sample, ``seq_lens``.
    ``examples`` are :class:`~oa_data.tokenize.Encoded` or dicts with ``input_ids`` and ``labels``
    (and optionally ``position_ids``, e.g. from PoSE)."""
    out: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    for i in bin:
        ex = examples[i]
        ids, labels = _field(ex, "input_ids"), _field(ex, "labels")
        has_pos = isinstance(ex, dict) and "position_ids" in ex
        pos = list(ex["position_ids"]) if has_pos else list(range(len(ids)))
        if not (len(ids) == len(labels) == len(pos)) or pos[:1] != [0]:
            raise OAError(f"sample {i}: input_ids, labels and position_ids must have one length and start at position 0")
        out["input_ids"] += ids
        out["labels"] += [IGNORE_INDEX, *labels[1:]]
        out["position_ids"] += pos
        out["seq_lens"].append(len(ids))
    return out


def sequence_ids_from_position_ids(position_ids: Sequence[int]) -> np.ndarray:
    """The sample number of every token: a sample starts wherever the position id is 0."""
    pos = np.asarray(position_ids)
    return np.cumsum(pos == 0) - (1 if len(pos) and pos[0] == 0 else 0)


def attention_mask_from_position_ids(position_ids: Sequence[int]) -> np.ndarray:
    """The boolean ``[S, S]`` mask (row: query, column: key) of causal attention within each sample."""
    seq = sequence_ids_from_position_ids(position_ids)
    n = len(seq)
    return (seq[:, None] == seq[None, :]) & np.tri(n, n, dtype=bool)
