"""Candidate rows (:mod:`oa_data.candidates`) as the examples of preference methods.

- :func:`pair_examples`: a preference pair (chosen, rejected) as one example. A pair whose replies became the
  same tokens when truncation cut them is dropped and counted (identical pairs are already dropped before).
- :func:`unpaired_examples`: a completion with a thumbs up or down (KTO). Preference pairs are unpaired as TRL
  does: the chosen reply is desirable, the rejected one undesirable. Each example also gets a mismatched
  completion (another example's) for KTO's KL estimate: the examples are put in a seeded random cycle and each
  takes the completion of the one before it, cut to fit ``max_length`` after its own prompt.

Examples are dicts of token-id lists; a full sequence is ``prompt_input_ids + <reply ids>``, labels -100 on the
prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from oa_core.errors import OAError


@dataclass
class PairCounts:
    """What :func:`pair_examples` dropped (on top of the per-dataset :class:`~oa_data.candidates.CandidateReport`)."""

    kept: int = 0
    identical_after_cut: int = 0


def pair_examples(rows: list[dict], counts: PairCounts | None = None) -> list[dict]:
    """Pairs ``{prompt_input_ids, chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels,
    margin}`` from rows of exactly two candidates."""
    counts = counts if counts is not None else PairCounts()
    out = []
    for i, row in enumerate(rows):
        ids, labels = row["candidate_input_ids"], row["candidate_labels"]
        if len(ids) != 2:
            raise OAError(f"row {i}: {len(ids)} replies, a preference pair has 2",
                          hint="use a preference format (preference, hh_rlhf, oasst.pairs), not rankings")
        if ids[0] == ids[1]:
            counts.identical_after_cut += 1
            continue
        out.append({"prompt_input_ids": row["prompt_input_ids"], "chosen_input_ids": ids[0], "chosen_labels": labels[0],
                    "rejected_input_ids": ids[1], "rejected_labels": labels[1], "margin": row.get("margin")})
    counts.kept = len(out)
    return out


@dataclass
class UnpairedCounts:
    desirable: int = 0
    undesirable: int = 0


def unpaired_examples(rows: list[dict], max_length: int, seed: int) -> tuple[list[dict], UnpairedCounts]:
    """Examples ``{prompt_input_ids, completion_input_ids, completion_labels, kl_input_ids, kl_labels, label}``
    from unpaired-feedback rows (one candidate and a label) and preference pairs (unpaired); and the counts of
    each label."""
    out = []
    for row in rows:
        replies = list(zip(row["candidate_input_ids"], row["candidate_labels"], strict=True))
        if row.get("label") is not None:
            labelled = [(*replies[0], bool(row["label"]))]
        else:  # a pair: chosen desirable, rejected undesirable
            labelled = [(*replies[0], True), (*replies[1], False)]
        out += [{"prompt_input_ids": row["prompt_input_ids"], "completion_input_ids": ids, "completion_labels": labels,
                 "label": label} for ids, labels, label in labelled]
    counts = UnpairedCounts(sum(ex["label"] for ex in out), sum(not ex["label"] for ex in out))
    cycle = list(range(len(out)))
    random.Random(f"{seed}:kl").shuffle(cycle)
    for k, i in enumerate(cycle):
        other = out[cycle[k - 1]]
        room = max(max_length - len(out[i]["prompt_input_ids"]), 1)
        out[i]["kl_input_ids"] = other["completion_input_ids"][:room]
        out[i]["kl_labels"] = other["completion_labels"][:room]
    return out, counts
