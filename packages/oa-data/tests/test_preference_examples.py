"""Candidate rows as preference examples: pairs (identical-after-truncation pairs dropped and counted), unpaired
feedback for KTO (pairs unpaired; a mismatched completion for the KL estimate, cut to fit)."""

from __future__ import annotations

import pytest

from oa_core.errors import OAError
from oa_data.candidates import CandidateReport, fit_candidates
from oa_data.preference import PairCounts, pair_examples, unpaired_examples


def _row(prompt, *replies, label=None, margin=None):
    return {"prompt_input_ids": list(prompt), "candidate_input_ids": [list(r) for r in replies],
            "candidate_labels": [list(r) for r in replies], "margin": margin, "label": label}


def test_pairs_whose_replies_become_identical_when_cut_are_dropped_and_counted():
    long_prompt = range(100, 140)
    rows = [_row([1, 2], [5, 6], [5, 7], margin=2.0),
            _row(long_prompt, [5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 6, 7, 8, 9, 10, 11, 12, 99])]  # differ at the end
    fitted = [fit_candidates(r, 16, CandidateReport()) for r in rows]
    assert fitted[1]["candidate_input_ids"][0] == fitted[1]["candidate_input_ids"][1]  # the cut removed the difference
    counts = PairCounts()
    pairs = pair_examples(fitted, counts)
    assert (counts.kept, counts.identical_after_cut) == (1, 1)
    assert pairs == [{"prompt_input_ids": [1, 2], "chosen_input_ids": [5, 6], "chosen_labels": [5, 6],
                      "rejected_input_ids": [5, 7], "rejected_labels": [5, 7], "margin": 2.0}]
    with pytest.raises(OAError, match="row 0: 3 replies, a preference pair has 2"):
        pair_examples([_row([1], [2], [3], [4])])


def test_unpaired_examples_unpair_pairs_and_get_a_mismatched_completion():
    rows = [_row([1, 2], [10, 11], [20]), _row([3], [30, 31, 32], label=False), _row([4, 4, 4, 4], [40, 41, 42], label=True)]
    examples, counts = unpaired_examples(rows, max_length=6, seed=0)
    assert [(e["prompt_input_ids"], e["completion_input_ids"], e["label"]) for e in examples] == [
        ([1, 2], [10, 11], True), ([1, 2], [20], False), ([3], [30, 31, 32], False), ([4, 4, 4, 4], [40, 41, 42], True)]
    assert (counts.desirable, counts.undesirable) == (2, 2)
    completions = [e["completion_input_ids"] for e in examples]
    partners = []
    for e in examples:
        assert len(e["prompt_input_ids"]) + len(e["kl_input_ids"]) <= 6 and e["kl_labels"] == e["kl_input_ids"]
        partners.append(next(i for i, c in enumerate(completions) if c[:len(e["kl_input_ids"])] == e["kl_input_ids"]))
    assert sorted(partners) == [0, 1, 2, 3] and all(p != i for i, p in enumerate(partners))  # a cycle: nobody's own
    again, _ = unpaired_examples(rows, max_length=6, seed=0)
    assert [e["kl_input_ids"] for e in again] == [e["kl_input_ids"] for e in examples]  # seeded
