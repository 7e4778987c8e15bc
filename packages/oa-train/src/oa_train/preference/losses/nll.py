"""The supervised term of preference methods: the negative log-likelihood of the chosen reply."""

from __future__ import annotations

from torch import Tensor

from oa_train.preference.losses import PairLogProbs, PreferenceParams


def sft(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """NLL of the chosen reply per supervised token, the SFT term of RPO (Pang et al., "Iterative Reasoning
    Preference Optimization", 2024, https://arxiv.org/abs/2404.19733), CPO (``cpo_alpha``), ORPO (Hong et al.,
    2024, https://arxiv.org/abs/2403.07691, Eq. 2) and ``loss_type: [sigmoid, sft]``.

        L = −log π_θ(y_c | x) / n_c,   n_c = supervised tokens of y_c

    Each pair counts once, whatever its length (TRL averages over all chosen tokens of a micro-batch instead;
    the two agree when the chosen replies have equal lengths).

    Args: ``pairs`` (B,) chosen log-probs and token counts. Returns: (B,) losses.
    """
    return -pairs.chosen_mean
