"""Reward-model losses (``register_losses``, family ``"reward"``), selected by ``train.loss``.

The family's contract: ``fn(pairs: RewardPairs, config) -> Tensor``, the loss **summed** over its units, where
``fn.unit`` is ``"prompts"`` (a mean per prompt, every prompt weighing the same) or ``"pairs"`` (every pair
weighing the same); the loop divides by the units of the whole optimizer step. ``config`` is the ``train:``
section (:class:`~oa_train.reward.config.RMConfig`) for the loss's options. A pair is an ordered (better,
worse) reply pair of one prompt; tied replies make no pair. Importing this module loads no torch (plugins
register these functions at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class RewardPairs:
    """Scores of every ordered reply pair of a micro-batch (P pairs of G prompts)."""

    chosen: torch.Tensor  # (P,) float: the better reply's score
    rejected: torch.Tensor  # (P,) float: the worse reply's score
    group: torch.Tensor  # (P,) long in [0, G): the prompt of each pair
    margin: torch.Tensor  # (P,) float: the pair's margin (0 without one)

    @property
    def num_groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0


def kwise(pairs: RewardPairs, config) -> torch.Tensor:
    """Open-Assistant's K-wise ranking loss (Ouyang et al. 2022, "Training language models to follow
    instructions with human feedback", eq. 1; Open-Assistant ``RMLoss`` with its L2 term).

    A prompt with K ranked replies gives its C(K, 2) pairs (i better than j); its loss is the mean over them of
    ``-log σ(s_i - s_j) + β · ½ (s_i² + s_j²)`` (β = ``config.beta``); summed over prompts (unit: prompts, so
    the step's loss is the mean over prompts, each weighing the same).
    Shapes: pairs of (P,) -> a 0-d tensor.
    """
    import torch

    terms = _ranking_terms(pairs, config.beta)
    groups = pairs.num_groups
    sums = terms.new_zeros(groups).index_add(0, pairs.group, terms)
    counts = torch.bincount(pairs.group, minlength=groups).to(terms.dtype)
    return (sums / counts.clamp(min=1)).sum()


kwise.unit = "prompts"


def pairwise_mean(pairs: RewardPairs, config) -> torch.Tensor:
    """The K-wise loss with all pairs pooled: every pair weighs the same, so prompts with more replies weigh
    more (Open-Assistant's loss over a flat list of pairs). Per pair ``-log σ(s_i - s_j) + β · ½ (s_i² +
    s_j²)``, summed (unit: pairs). Shapes: pairs of (P,) -> a 0-d tensor."""
    return _ranking_terms(pairs, config.beta).sum()


pairwise_mean.unit = "pairs"


def pairwise(pairs: RewardPairs, config) -> torch.Tensor:
    """Bradley–Terry pairwise loss (Bradley & Terry 1952; Ouyang et al. 2022), as TRL's ``RewardTrainer``:
    per pair ``-log σ(r_c - r_r - m)`` with the pair's margin m (Llama 2, Touvron et al. 2023, sec. 3.2.2;
    0 without ``train.use_margin``) plus the reward-centering term ``c · (r_c + r_r)²`` (Eisenstein et al.
    2023, "Helping or herding?"; c = ``config.center_rewards_coefficient``, off when null), summed (unit:
    pairs; divided by the pairs this is TRL's ``mean(-logσ) + c·mean((r_c + r_r)²)``).
    Shapes: pairs of (P,) -> a 0-d tensor.
    """
    import torch.nn.functional as F

    loss = -F.logsigmoid(pairs.chosen - pairs.rejected - pairs.margin)
    if config.center_rewards_coefficient is not None:
        loss = loss + config.center_rewards_coefficient * (pairs.chosen + pairs.rejected) ** 2
    return loss.sum()


pairwise.unit = "pairs"


def _ranking_terms(pairs: RewardPairs, beta: float) -> torch.Tensor:
    """(P,) ``-log σ(s_i - s_j) + β · ½ (s_i² + s_j²)``."""
    import torch.nn.functional as F

    l2 = 0.5 * (pairs.chosen ** 2 + pairs.rejected ** 2)
    return -F.logsigmoid(pairs.chosen - pairs.rejected) + beta * l2


LOSSES = {
    "kwise": (kwise, "Open-Assistant K-wise ranking loss: mean over a prompt's pairs of -log σ(s_i - s_j) + β·½(s_i² "
              "+ s_j²), then the mean over prompts"),
    "pairwise_mean": (pairwise_mean, "the K-wise loss with all pairs pooled (every pair weighs the same)"),
    "pairwise": (pairwise, "Bradley–Terry -log σ(r_c - r_r - margin) + c·(r_c + r_r)² (TRL RewardTrainer)"),
}
