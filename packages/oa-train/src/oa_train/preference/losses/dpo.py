"""Reference-based pairwise losses (the DPO family). Each takes :class:`PairLogProbs` with reference
log-probabilities and returns per-pair losses of shape (B,).

Notation: r_c = log π_θ(y_c|x) − log π_ref(y_c|x), r_r likewise for the rejected reply (log-ratios of summed
token log-probabilities), Δ = r_c − r_r, β = ``params.beta``, ε = ``params.label_smoothing``, σ the logistic
function. The formulas follow TRL 1.16's ``DPOTrainer`` (tested against it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from oa_train.preference.losses import PairLogProbs, PreferenceParams


def _delta(pairs: PairLogProbs) -> Tensor:
    return pairs.chosen_logratios - pairs.rejected_logratios


def sigmoid(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """DPO: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"
    (2023, https://arxiv.org/abs/2305.18290), Eq. 7.

        L = −log σ(β Δ)

    Args: ``pairs`` (B,) policy and reference log-probs of chosen and rejected replies; ``params.beta``.
    Returns: (B,) losses.
    """
    return -F.logsigmoid(params.beta * _delta(pairs))


def hinge(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """SLiC-HF's hinge loss on the DPO log-ratios: Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with
    Human Feedback" (2023, https://arxiv.org/abs/2305.10425), Eq. 1; Liu et al., "Statistical Rejection
    Sampling Improves Preference Optimization" (2023, https://arxiv.org/abs/2309.06657), Eq. 9.

        L = max(0, 1 − β Δ)

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta`` (1/β is the margin). Returns: (B,) losses.
    """
    return torch.relu(1 - params.beta * _delta(pairs))


def ipo(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """IPO: Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences" (2023,
    https://arxiv.org/abs/2310.12036), Eq. 17, with the log-ratios averaged per reply token (as TRL does, agreed
    with the authors), so that β (the paper's τ) does not depend on reply lengths:

        L = (r_c / n_c − r_r / n_r − 1 / (2β))²,   n = supervised tokens of the reply

    Args: ``pairs`` (B,) with reference log-probs and token counts; ``params.beta`` = τ. Returns: (B,) losses.
    """
    per_token = pairs.chosen_logratios / pairs.chosen_tokens.clamp(min=1) - \
        pairs.rejected_logratios / pairs.rejected_tokens.clamp(min=1)
    return (per_token - 1 / (2 * params.beta)) ** 2


def cdpo(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """Conservative DPO (label smoothing): Mitchell, "A note on DPO with noisy preferences & relationship to IPO"
    (2023, https://ericmitchell.ai/cdpo.pdf): the DPO loss when each label is flipped with probability ε.

        L = −(1 − ε) log σ(β Δ) − ε log σ(−β Δ)

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``, ``params.label_smoothing`` = ε in [0, 0.5).
    Returns: (B,) losses.
    """
    eps = params.label_smoothing
    z = params.beta * _delta(pairs)
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def robust(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """Robust DPO: Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy Feedback" (2024,
    https://arxiv.org/abs/2403.00409), Eq. 8: an unbiased estimate of the clean DPO loss when labels flip with
    probability ε.

        L = [−(1 − ε) log σ(β Δ) + ε log σ(−β Δ)] / (1 − 2ε)

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``, ``params.label_smoothing`` = ε in [0, 0.5).
    Returns: (B,) losses.
    """
    eps = params.label_smoothing
    z = params.beta * _delta(pairs)
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


def bco_pair(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """BCO on pairs: Jung et al., "Binary Classifier Optimization for Large Language Model Alignment" (2024,
    https://arxiv.org/abs/2404.04656): each reply classified on its own (without the paper's reward shift δ, as
    TRL 1.16).

        L = −log σ(β r_c) − log σ(−β r_r)

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``. Returns: (B,) losses.
    """
    return -F.logsigmoid(params.beta * pairs.chosen_logratios) - F.logsigmoid(-params.beta * pairs.rejected_logratios)


def sppo_hard(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """SPPO with hard win probabilities: Wu et al., "Self-Play Preference Optimization for Language Model
    Alignment" (2024, https://arxiv.org/abs/2405.00675), Eq. 4.7 with P(y_c ≻ y_r) = 1 and P(y_r ≻ y_c) = 0.

        L = (r_c − 1/(2β))² + (r_r + 1/(2β))²

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``. Returns: (B,) losses.
    """
    half = 0.5 / params.beta
    return (pairs.chosen_logratios - half) ** 2 + (pairs.rejected_logratios + half) ** 2


def nca_pair(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """NCA on pairs: Chen et al., "Noise Contrastive Alignment of Language Models with Explicit Rewards" (2024,
    https://arxiv.org/abs/2402.05369): optimises each reply's absolute likelihood, not only the gap, so the chosen
    log-probability does not fall with the rejected one.

        L = −log σ(β r_c) − ½ log σ(−β r_c) − ½ log σ(−β r_r)

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``. Returns: (B,) losses.
    """
    c, r = params.beta * pairs.chosen_logratios, params.beta * pairs.rejected_logratios
    return -F.logsigmoid(c) - 0.5 * F.logsigmoid(-c) - 0.5 * F.logsigmoid(-r)


def apo_zero(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """APO-zero: D'Oosterlinck et al., "Anchored Preference Optimization and Contrastive Revisions" (2024,
    https://arxiv.org/abs/2408.06266), Eq. 7: for chosen replies better than the model's own; raises the chosen
    and lowers the rejected likelihood.

        L = 1 − σ(β r_c) + σ(β r_r)

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``. Returns: (B,) losses.
    """
    return 1 - torch.sigmoid(params.beta * pairs.chosen_logratios) + torch.sigmoid(params.beta * pairs.rejected_logratios)


def apo_down(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """APO-down: D'Oosterlinck et al. (2024, https://arxiv.org/abs/2408.06266), Eq. 8: for chosen replies worse
    than the model's own; lowers both likelihoods, the rejected one more.

        L = σ(β r_c) + 1 − σ(β Δ)

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``. Returns: (B,) losses.
    """
    return torch.sigmoid(params.beta * pairs.chosen_logratios) + 1 - torch.sigmoid(params.beta * _delta(pairs))


def exo_pair(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """EXO on pairs: Ji et al., "Towards Efficient Exact Optimization of Language Model Alignment" (2024,
    https://arxiv.org/abs/2402.00856), Eq. 16 with K = 2: the reverse KL from the policy's pair distribution
    p_θ = softmax(β r) over {y_c, y_r} to the smoothed labels (1 − ε, ε).

        L = σ(β Δ) [log σ(β Δ) − log(1 − ε)] + σ(−β Δ) [log σ(−β Δ) − log ε]

    Args: ``pairs`` (B,) with reference log-probs; ``params.beta``, ``params.label_smoothing`` = ε > 0 (the paper:
    1e-3). Returns: (B,) losses.
    """
    eps = params.label_smoothing
    z = params.beta * _delta(pairs)
    return torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps))
