"""PoSE position ids (positional skip-wise training), following Axolotl's ``add_pose_position_ids``:
the sample is split into chunks, before chosen split tokens (or into ``num_chunks`` equal chunks when
none are given), and every chunk but the first is shifted by a random skip, so the positions span up to
``max_context_len`` while the sample stays short."""

from __future__ import annotations

import random
from collections.abc import Sequence

from oa_core.errors import OAError


def pose_position_ids(input_ids: Sequence[int], max_context_len: int, split_on_token_ids: Sequence[int] = (),
                      num_chunks: int = 2, rng: random.Random | None = None) -> list[int]:
    """Strictly increasing position ids from 0, below ``max_context_len``, that jump only right before a
    split token (or a chunk boundary)."""
    n = len(input_ids)
    if n > max_context_len:
        raise OAError(f"a sample of {n} tokens does not fit PoSE's max_context_len {max_context_len}",
                      hint="raise data.pose.max_context_len or truncate to a smaller max_length")
    rng = rng or random.Random(0)
    splits = set(split_on_token_ids)
    if splits:
        cuts = [i for i, t in enumerate(input_ids) if t in splits and i > 0]
    else:
        size = max(n // num_chunks, 1)
        cuts = [k * size for k in range(1, num_chunks) if k * size < n]
    budget = max_context_len - n
    positions, shift, prev = [], 0, 0
    for cut in [*cuts, n]:
        positions += range(prev + shift, cut + shift)
        skip = rng.randint(0, budget) if budget else 0
        budget -= skip
        shift += skip
        prev = cut
    return positions
