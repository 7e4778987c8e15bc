"""The GRPO family's losses (family ``"grpo"``, selected by ``train.loss_type``).

Every loss is one function ``fn(terms: PolicyTerms, config) -> Tensor`` that returns the loss of one micro-batch
**summed over its units**, and declares the unit as ``fn.unit``:

- ``"sequences"``: one per completion of the micro-batch;
- ``"tokens"``: one per completion token that counts (``terms.mask``);
- ``"micro_batches"``: one per micro-batch.

The shared loop divides an optimizer step's summed loss by the units of all its micro-batches on all processes
(:class:`oa_train.training.objective.Objective`), which reproduces TRL 1.16's normalisations exactly (tested):
TRL divides GRPO's and Dr. GRPO's per-micro-batch means by the accumulation steps and averages the processes'
gradients, so their unit is the completion; BNPO's token mean is per micro-batch, so its unit is the micro-batch;
DAPO divides by the completion tokens of the whole generation batch, so its unit is the token.

A third party adds a variant through ``register_losses`` with ``Loss(fn, family="grpo")`` and ``fn.unit``; the
per-token terms it may want are :func:`clipped_surrogate` and :func:`k3_kl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by what calls these, not when the plugin registers them
    import torch

UNITS = ("sequences", "tokens", "micro_batches")


@dataclass
class PolicyTerms:
    """What a GRPO loss sees for one micro-batch of ``B`` completions, padded to ``T`` tokens."""

    logps: torch.Tensor  # (B, T) float32: log π_θ(o_t | q, o_<t) of the sampled tokens, with gradients
    old_logps: torch.Tensor  # (B, T): the same under the policy that generated them (= logps.detach() when
    # num_iterations == 1: every micro-batch of a step is trained before the update)
    advantages: torch.Tensor  # (B,): group-relative advantage of each completion
    mask: torch.Tensor  # (B, T) float: 1 for the completion tokens that count (0: padding, masked truncations)
    ref_logps: torch.Tensor | None = None  # (B, T): the reference policy's, when beta > 0


def importance_weights(terms: PolicyTerms, level: str) -> torch.Tensor:
    """The ratio π_θ / π_θ_old: per token, (B, T) (``level="token"``), or per sequence, (B, 1) =
    exp(mean over the completion's tokens of log π_θ - log π_θ_old) (``"sequence"``, GSPO: Zheng et al. 2025,
    "Group Sequence Policy Optimization", arXiv:2507.18071)."""
    log_ratio = terms.logps - terms.old_logps
    if level == "token":
        return log_ratio.exp()
    if level == "sequence":
        mean = (log_ratio * terms.mask).sum(-1) / terms.mask.sum(-1).clamp(min=1.0)
        return mean.unsqueeze(-1).exp()
    raise ValueError(f"importance sampling level must be 'token' or 'sequence', not {level!r}")


def k3_kl(terms: PolicyTerms) -> torch.Tensor:
    """Per-token KL(π_θ ‖ π_ref), Schulman's unbiased, non-negative k3 estimator as GRPO uses it:
    exp(log π_ref - log π_θ) - (log π_ref - log π_θ) - 1. (B, T)."""
    delta = terms.ref_logps - terms.logps
    return delta.exp() - delta - 1


def clipped_surrogate(terms: PolicyTerms, config) -> torch.Tensor:
    """The per-token GRPO objective to minimise, with the ratio r clipped to [1 - ε_low, 1 + ε_high] (DAPO's
    clip-higher when ε_high > ε_low) and the KL penalty:

        ℓ_t = -min(r_t · A, clip(r_t, 1 - ε, 1 + ε_high) · A) + β · KL_t

    ``config``: ``epsilon``, ``clip_high``, ``beta``, ``importance_sampling_level``. Shape (B, T), or (B, 1) at the
    sequence level without KL (broadcast against the mask by the aggregations, as TRL does)."""
    advantages = terms.advantages.unsqueeze(1) if terms.advantages.dim() == 1 else terms.advantages
    ratio = importance_weights(terms, config.importance_sampling_level)
    clipped = ratio.clamp(1 - config.epsilon, 1 + config.clip_high)
    loss = -(ratio * advantages).minimum(clipped * advantages)
    if config.beta != 0.0:
        loss = loss + config.beta * k3_kl(terms)
    return loss


def grpo(terms: PolicyTerms, config) -> torch.Tensor:
    """GRPO (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300): the mean of ℓ_t over each completion's tokens,
    averaged over completions.

        L = 1/B Σ_i 1/|o_i| Σ_t ℓ_{i,t}        (summed here over the B completions: unit "sequences")

    terms: (B, T) → a 0-d tensor. Known to favour short right answers and long wrong ones (length bias)."""
    per_token = clipped_surrogate(terms, config)
    return ((per_token * terms.mask).sum(-1) / terms.mask.sum(-1).clamp(min=1.0)).sum()


grpo.unit = "sequences"


def bnpo(terms: PolicyTerms, config) -> torch.Tensor:
    """BNPO (batch-normalised policy optimisation, as TRL names it): ℓ_t averaged over the tokens of the
    micro-batch, then over micro-batches (unit "micro_batches").

        L_mb = Σ_{i,t} ℓ_{i,t} / Σ_i |o_i|

    terms: (B, T) → a 0-d tensor. The token mean is local to a micro-batch, so it depends on how the generation
    batch is split (as in TRL)."""
    per_token = clipped_surrogate(terms, config)
    return (per_token * terms.mask).sum() / terms.mask.sum().clamp(min=1.0)


bnpo.unit = "micro_batches"


def dr_grpo(terms: PolicyTerms, config) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective",
    arXiv:2503.20783): a token sum divided by a constant, removing the length bias.

        L = Σ_{i,t} ℓ_{i,t} / (B · max_completion_length)   (summed over tokens / max_completion_length here:
                                                             unit "sequences" brings the 1/B)

    terms: (B, T) → a 0-d tensor. Pair with ``scale_rewards: none``, as the paper does."""
    per_token = clipped_surrogate(terms, config)
    return (per_token * terms.mask).sum() / config.max_completion_length


dr_grpo.unit = "sequences"


def dapo(terms: PolicyTerms, config) -> torch.Tensor:
    """DAPO (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", arXiv:2503.14476):
    the token-level mean over every completion token of the generation batch.

        L = Σ_{i,t} ℓ_{i,t} / Σ_i |o_i|      (over the whole step on all processes: unit "tokens")

    terms: (B, T) → a 0-d tensor (the token sum of the micro-batch)."""
    per_token = clipped_surrogate(terms, config)
    return (per_token * terms.mask).sum()


dapo.unit = "tokens"


LOSSES = {
    "grpo": (grpo, "GRPO: per-completion token mean, averaged over completions"),
    "bnpo": (bnpo, "BNPO: token mean per micro-batch"),
    "dr_grpo": (dr_grpo, "Dr. GRPO: token sum / (completions × max_completion_length)"),
    "dapo": (dapo, "DAPO: token mean over the whole generation batch (TRL's default)"),
}


def num_units(unit: str, mask: torch.Tensor) -> int:
    """How many units of ``unit`` a micro-batch with completion ``mask`` (B, T) has."""
    if unit == "sequences":
        return int(mask.shape[0])
    if unit == "tokens":
        return int(mask.sum())
    if unit == "micro_batches":
        return 1
    raise ValueError(f"unknown loss unit {unit!r} (one of {', '.join(UNITS)})")


def policy_tallies(terms: PolicyTerms, config) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Metric tallies ``name -> (sum, count)`` of one micro-batch, over its counted tokens (or its completions at the
    sequence level), as TRL logs them: how often the ratio was clipped below (with A < 0), above (A > 0), either,
    and the mean KL to the reference."""
    import torch

    with torch.no_grad():
        return _policy_tallies(terms, config)


def _policy_tallies(terms: PolicyTerms, config) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    advantages = terms.advantages.unsqueeze(1) if terms.advantages.dim() == 1 else terms.advantages
    ratio = importance_weights(terms, config.importance_sampling_level)
    low = ((ratio < 1 - config.epsilon) & (advantages < 0)).float()
    high = ((ratio > 1 + config.clip_high) & (advantages > 0)).float()

    def tally(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 1:  # one value per completion
            return x.sum(), x.new_tensor(float(x.shape[0]))
        return (x * terms.mask).sum(), terms.mask.sum()

    out = {"clip_ratio/low": tally(low), "clip_ratio/high": tally(high), "clip_ratio/region": tally(low.maximum(high))}
    if config.beta != 0.0 and terms.ref_logps is not None:
        out["kl"] = tally(k3_kl(terms))
    return out
