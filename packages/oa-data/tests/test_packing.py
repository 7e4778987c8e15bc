"""Best-fit-decreasing packing, collation with restarting positions, and the attention mask they imply."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oa_core.errors import OAError
from oa_data.packing import (
    attention_mask_from_position_ids,
    collate_packed,
    pack_bfd,
    packing_efficiency,
    sequence_ids_from_position_ids,
)
from oa_data.pose import pose_position_ids
from oa_data.tokenize import IGNORE_INDEX, Encoded


def test_pack_bfd_golden():
    # sorted 5,4,3,3,2,1 into bins of 8: 5->A(3 left) 4->B(4) 3->A(0, best fit) 3->B(1) 2->C(6) 1->B(0)
    lengths = [5, 4, 3, 3, 2, 1]
    assert pack_bfd(lengths, 8) == [[0, 2], [1, 3, 5], [4]]
    assert packing_efficiency(pack_bfd(lengths, 8), lengths, 8) == pytest.approx(18 / 24)


def test_pack_bfd_rejects_samples_that_do_not_fit():
    with pytest.raises(OAError, match="sample 1 has 9 tokens") as e:
        pack_bfd([3, 9], 8)
    assert "truncate" in e.value.hint


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), min_size=1, max_size=60), max_length=st.integers(64, 128))
def test_pack_bfd_properties(lengths, max_length):
    bins = pack_bfd(lengths, max_length)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= max_length for b in bins)
    # any-fit packing: no two bins are both at most half full
    assert sum(sum(lengths[i] for i in b) * 2 <= max_length for b in bins) <= 1
    assert len(bins) <= 2 * math.ceil(sum(lengths) / max_length)
    assert 0 < packing_efficiency(bins, lengths, max_length) <= 1


def example(n, start):
    ids = list(range(start, start + n))
    return Encoded(ids, [t if k % 2 else IGNORE_INDEX for k, t in enumerate(ids)], [(0, n)], ["text"])


def test_collate_packed():
    examples = [example(3, 10), example(2, 20), example(4, 30)]
    row = collate_packed(examples, [2, 0])
    assert row["input_ids"] == [30, 31, 32, 33, 10, 11, 12]
    assert row["position_ids"] == [0, 1, 2, 3, 0, 1, 2]
    assert row["seq_lens"] == [4, 3]
    # the first token of each sample is never a target: no loss across the boundary
    assert row["labels"] == [IGNORE_INDEX, 31, IGNORE_INDEX, 33, IGNORE_INDEX, 11, IGNORE_INDEX]


def test_attention_mask_golden():
    mask = attention_mask_from_position_ids([0, 1, 2, 0, 1])
    expected = np.array([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ], dtype=bool)
    assert mask.dtype == bool and (mask == expected).all()
    assert sequence_ids_from_position_ids([0, 5, 9, 0, 3]).tolist() == [0, 0, 0, 1, 1]


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=12), max_length=st.integers(20, 48),
       pose=st.booleans(), seed=st.integers(0, 1000))
def test_packed_tokens_never_attend_across_samples(lengths, max_length, pose, seed):
    rng = random.Random(seed)
    examples = []
    for i, n in enumerate(lengths):
        ex = {"input_ids": [i] * n, "labels": [i] * n}
        if pose:
            ex["position_ids"] = pose_position_ids(ex["input_ids"], 4 * max_length, num_chunks=3, rng=rng)
        examples.append(ex)
    for b in pack_bfd(lengths, max_length):
        row = collate_packed(examples, b)
        owner = np.repeat(np.arange(len(b)), row["seq_lens"])  # from the lengths, not the positions
        mask = attention_mask_from_position_ids(row["position_ids"])
        q, k = np.nonzero(mask)
        assert (owner[q] == owner[k]).all() and (k <= q).all()
        # and nothing within a sample is hidden: full causal attention inside each sample
        assert mask.sum() == sum(n * (n + 1) // 2 for n in row["seq_lens"])
        assert len(row["input_ids"]) <= max_length
