"""Micro-batches of ranked reply groups: every reply of every prompt is one sequence (prompt + reply), in one
packed row (padding-free) or a padded batch (:func:`oa_infer.sequence_scores.batch_sequences`), with the
ordered reply pairs the losses compare."""

from __future__ import annotations

import torch

from oa_infer.sequence_scores import batch_sequences


def collate_groups(rows: list[dict], pad_id: int, *, packed: bool) -> dict[str, torch.Tensor]:
    """Model inputs of the rows' sequences (row by row, replies best first) and, per sequence, its prompt
    (``sequence_group``) and rank (``sequence_rank``); per ordered pair (rank i < rank j, ties make none) the
    sequence indices ``pair_better``/``pair_worse``, its prompt ``pair_group`` and ``pair_margin`` (0 without
    one)."""
    sequences, seq_group, seq_rank = [], [], []
    better, worse, pair_group, pair_margin = [], [], [], []
    for g, row in enumerate(rows):
        first, ranks = len(sequences), list(row["ranks"])
        prompt = list(row["prompt_input_ids"])
        sequences += [prompt + list(reply) for reply in row["candidate_input_ids"]]
        seq_group += [g] * len(ranks)
        seq_rank += ranks
        margin = row.get("margin")
        for i, a in enumerate(ranks):
            for j, b in enumerate(ranks):
                if a < b:
                    better.append(first + i)
                    worse.append(first + j)
                    pair_group.append(g)
                    pair_margin.append(0.0 if margin is None else float(margin))
    batch = batch_sequences(sequences, pad_id, packed=packed)
    long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return batch | {"sequence_group": long(seq_group), "sequence_rank": long(seq_rank), "pair_better": long(better),
                    "pair_worse": long(worse), "pair_group": long(pair_group),
                    "pair_margin": torch.tensor(pair_margin, dtype=torch.float32)}
