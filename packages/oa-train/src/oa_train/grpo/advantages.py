"""Group-relative advantages from the scores of several reward functions.

``scores`` is (N, F): the score of each of N completions (``num_generations`` consecutive completions per prompt)
by each of F reward functions, NaN where a function gave none (it raised, timed out, returned None ...).

The reward of a completion is the weighted sum of its scores, and its advantage ``(reward - mean of its group) /
(std + 1e-4)`` (TRL 1.16's ``sum_then_normalize``; the std of the group, of the whole generation batch, or none).
With every score present the numbers equal TRL's. A missing score is handled per function: it is replaced by
the mean of that function's scores in the group, so the completion neither gains nor loses through that function
and the other completions' baseline for it is unchanged (TRL adds 0 instead, which moves the baseline). A
completion with no score from any function has advantage 0 and stays out of the means and stds, as in TRL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

EPS = 1e-4


def nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The unbiased std ignoring NaNs (NaN with fewer than 2 values), as TRL's ``nanstd``; ``dim`` is reduced."""
    mean = torch.nanmean(x, dim=dim, keepdim=True) if dim is not None else torch.nanmean(x)
    variance = torch.nanmean((x - mean) ** 2, dim=dim)
    count = (~torch.isnan(x)).sum(dim=dim) if dim is not None else (~torch.isnan(x)).sum()
    correction = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.full_like(variance, float("nan")))
    return torch.sqrt(variance * correction)


def combined_rewards(scores: torch.Tensor, weights: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards (N,), scored (N,) bool)``: the weighted sum of each completion's scores with a missing score
    replaced by its function's mean in the group (module docstring); NaN where no function scored."""
    n, f = scores.shape
    grouped = scores.view(n // group, group, f)
    present = ~torch.isnan(grouped)
    means = torch.nanmean(grouped, dim=1, keepdim=True).nan_to_num(0.0)  # a function with no score in the group: 0
    filled = torch.where(present, grouped, means.expand_as(grouped))
    rewards = (filled * weights.to(scores)).sum(-1).view(n)
    scored = present.any(-1).view(n)
    return rewards.masked_fill(~scored, float("nan")), scored


@dataclass
class Advantages:
    values: torch.Tensor  # (N,): the advantage of each completion (0 where it has no reward)
    rewards: torch.Tensor  # (N,): its reward (NaN where none)
    std: torch.Tensor  # (N,): the std it was divided by (group or batch), NaN where undefined
    zero_std: torch.Tensor  # (N,) bool: that std is 0 (every completion of the group scored the same)


def group_advantages(scores: torch.Tensor, weights: torch.Tensor, group: int, scale: str,
                     gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Advantages:
    """Advantages of N completions (``group`` consecutive ones per prompt) from their (N, F) ``scores``.
    ``scale``: ``group``, ``batch`` or ``none``; ``gather`` concatenates a tensor over every process (the batch
    std is that of the whole generation batch)."""
    rewards, _ = combined_rewards(scores, weights, group)
    grouped = rewards.view(-1, group)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group)
    if scale in ("group", "none"):
        std = nanstd(grouped, dim=1).repeat_interleave(group)
    elif scale == "batch":
        everything = gather(rewards) if gather is not None else rewards
        std = nanstd(everything).expand_as(rewards) if everything.numel() > 1 else torch.zeros_like(rewards)
    else:
        raise ValueError(f"scale_rewards must be group, batch or none, not {scale!r}")
    advantages = rewards - mean
    if scale != "none":
        advantages = advantages / (std + EPS)
    zero_std = torch.isclose(std, torch.zeros_like(std))
    return Advantages(torch.nan_to_num(advantages, nan=0.0), rewards, std, zero_std)
