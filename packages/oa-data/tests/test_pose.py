"""PoSE position ids: skips only before split tokens (or chunk boundaries), within max_context_len."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oa_core.errors import OAError
from oa_data.pose import pose_position_ids

SPLIT = 7


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.sampled_from([1, 2, 3, SPLIT]), min_size=1, max_size=50), extra=st.integers(0, 200),
       seed=st.integers(0, 10_000))
def test_pose_skips_only_before_split_tokens(ids, extra, seed):
    max_context = len(ids) + extra
    pos = pose_position_ids(ids, max_context, [SPLIT], rng=random.Random(seed))
    assert len(pos) == len(ids) and pos[0] == 0 and pos[-1] < max_context
    for k in range(1, len(ids)):
        assert pos[k] > pos[k - 1]
        if pos[k] != pos[k - 1] + 1:
            assert ids[k] == SPLIT


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 60), chunks=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_pose_without_split_tokens_skips_at_chunk_boundaries(n, chunks, seed):
    pos = pose_position_ids(list(range(n)), 4 * n, num_chunks=chunks, rng=random.Random(seed))
    size = max(n // chunks, 1)
    jumps = [k for k in range(1, n) if pos[k] != pos[k - 1] + 1]
    assert all(k % size == 0 and k < chunks * size for k in jumps)


def test_pose_spreads_positions_and_is_seeded():
    ids = [1, 2, SPLIT, 3, 4, SPLIT, 5, 6]
    runs = [pose_position_ids(ids, 1000, [SPLIT], rng=random.Random(s)) for s in range(20)]
    assert runs[3] == pose_position_ids(ids, 1000, [SPLIT], rng=random.Random(3))
    assert max(r[-1] for r in runs) > 100  # positions reach far beyond the 8 tokens
    assert all(r[:2] == [0, 1] for r in runs)
    assert pose_position_ids(ids, len(ids), [SPLIT]) == list(range(len(ids)))  # no room: no skips


def test_pose_rejects_too_long_samples():
    with pytest.raises(OAError, match="8 tokens does not fit PoSE's max_context_len 4"):
        pose_position_ids([1] * 8, 4)
