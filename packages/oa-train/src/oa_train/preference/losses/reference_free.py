"""Pairwise losses without a reference model (ORPO, SimPO, CPO): they score replies by the policy's own
log-probabilities. Each returns per-pair losses of shape (B,); β = ``params.beta``, ε = ``params.label_smoothing``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from oa_train.preference.losses import PairLogProbs, PreferenceParams


def _smoothed(z: Tensor, eps: float) -> Tensor:
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0, stable on both sides of −ln 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """ORPO's odds-ratio term: Hong et al., "ORPO: Monolithic Preference Optimization without Reference Model"
    (2024, https://arxiv.org/abs/2403.07691), Eqs. 4-7, on the average per-token log-probabilities p̄ (the full
    ORPO loss adds the ``sft`` term):

        L = −λ log σ(log odds(y_c) − log odds(y_r)),   log odds(y) = p̄ − log(1 − exp p̄),   λ = β

    Args: ``pairs`` (B,) policy log-probs and token counts; ``params.beta`` = λ. Returns: (B,) losses.
    """
    c, r = pairs.chosen_mean.float(), pairs.rejected_mean.float()
    log_odds = (c - r) - (_log1mexp(c) - _log1mexp(r))
    return -params.beta * F.logsigmoid(log_odds)


def simpo(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """SimPO: Meng et al., "SimPO: Simple Preference Optimization with a Reference-Free Reward" (2024,
    https://arxiv.org/abs/2405.14734), Eq. 6: the reward is the average per-token log-probability, with a target
    margin γ (and optional label smoothing ε, as TRL's CPO trainer):

        z = β (log π_θ(y_c|x)/n_c − log π_θ(y_r|x)/n_r) − γ,   L = −(1 − ε) log σ(z) − ε log σ(−z)

    Args: ``pairs`` (B,) policy log-probs and token counts; ``params.beta``, ``params.gamma``,
    ``params.label_smoothing``. Returns: (B,) losses.
    """
    z = params.beta * (pairs.chosen_mean - pairs.rejected_mean) - params.gamma
    return _smoothed(z, params.label_smoothing)


def cpo(pairs: PairLogProbs, params: PreferenceParams) -> Tensor:
    """CPO's preference term: Xu et al., "Contrastive Preference Optimization: Pushing the Boundaries of LLM
    Performance in Machine Translation" (2024, https://arxiv.org/abs/2401.08417), Eq. 3: DPO with a uniform
    reference (the full CPO loss adds ``cpo_alpha`` × the ``sft`` term):

        z = β (log π_θ(y_c|x) − log π_θ(y_r|x)),   L = −(1 − ε) log σ(z) − ε log σ(−z)

    Args: ``pairs`` (B,) policy log-probs; ``params.beta``, ``params.label_smoothing``. Returns: (B,) losses.
    """
    return _smoothed(params.beta * (pairs.chosen - pairs.rejected), params.label_smoothing)
