"""Losses on unpaired feedback (KTO): each completion is desirable or not. Per-example losses of shape (N,);
the method weighs them by ``desirable_weight`` / ``undesirable_weight``. r = log π_θ(y|x) − log π_ref(y|x),
β = ``params.beta``, z_ref = ``examples.kl``."""

from __future__ import annotations

import torch
from torch import Tensor

from oa_train.preference.losses import PreferenceParams, UnpairedLogProbs


def kto(examples: UnpairedLogProbs, params: PreferenceParams) -> Tensor:
    """KTO: Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization" (2024,
    https://arxiv.org/abs/2402.01306), Eq. 7 (the weights λ_D, λ_U are applied by the method):

        L = 1 − σ(β (r − z_ref))  for a desirable y,   1 − σ(β (z_ref − r))  for an undesirable y

    z_ref = max(0, mean over mismatched pairs (x, y') of log π_θ(y'|x) − log π_ref(y'|x)), without gradient.

    Args: ``examples`` (N,) log-probs, reference log-probs, labels and the 0-d z_ref; ``params.beta``.
    Returns: (N,) losses.
    """
    r = examples.logratios
    return torch.where(examples.desirable, 1 - torch.sigmoid(params.beta * (r - examples.kl)),
                       1 - torch.sigmoid(params.beta * (examples.kl - r)))


def apo_zero_unpaired(examples: UnpairedLogProbs, params: PreferenceParams) -> Tensor:
    """APO-zero for unpaired feedback: D'Oosterlinck et al., "Anchored Preference Optimization and Contrastive
    Revisions" (2024, https://arxiv.org/abs/2408.06266), Eq. 7 applied per reply (no reference point):

        L = 1 − σ(β r)  for a desirable y,   σ(β r)  for an undesirable y

    Args: ``examples`` (N,) log-probs, reference log-probs and labels; ``params.beta``. Returns: (N,) losses.
    """
    z = torch.sigmoid(params.beta * examples.logratios)
    return torch.where(examples.desirable, 1 - z, z)
