"""Preference losses, one registered function each (``register_losses``), selected by name in a method's config.

Two families, each with a fixed signature:

- ``"preference"``: ``fn(pairs: PairLogProbs, params: PreferenceParams) -> (B,)`` per-pair losses, for the
  pairwise methods (``dpo``, ``orpo``, ``simpo``, ``cpo``);
- ``"unpaired"``: ``fn(examples: UnpairedLogProbs, params: PreferenceParams) -> (N,)`` per-example losses, for
  ``kto`` (the desirable/undesirable weights are applied by the method).

The method sums ``weight × loss`` over the examples of a micro-batch; the training loop divides by the pairs
(examples) of the whole optimizer step. Importing this package loads no torch: the built-in functions are
imported on their first call, so ``oa plugins list`` and ``oa config validate`` stay fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class PairLogProbs:
    """Log-probabilities of the replies of B pairs, each a (B,) float32 tensor. A reply's log-probability is the
    sum over its supervised tokens of log π(y_t | x, y_<t)."""

    chosen: Tensor  # log π_θ(y_c | x)
    rejected: Tensor  # log π_θ(y_r | x)
    chosen_tokens: Tensor  # supervised tokens of y_c (float)
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None  # log π_ref(y_c | x); None for reference-free methods
    ref_rejected: Tensor | None = None
    margin: Tensor | None = None  # the pair's ``metadata.margin`` (0 where it has none)

    @property
    def chosen_logratios(self) -> Tensor:
        """log π_θ(y_c|x) − log π_ref(y_c|x)."""
        return self.chosen - self._ref(self.ref_chosen)

    @property
    def rejected_logratios(self) -> Tensor:
        return self.rejected - self._ref(self.ref_rejected)

    @property
    def chosen_mean(self) -> Tensor:
        """The average per-token log-probability of y_c."""
        return self.chosen / self.chosen_tokens.clamp(min=1)

    @property
    def rejected_mean(self) -> Tensor:
        return self.rejected / self.rejected_tokens.clamp(min=1)

    @staticmethod
    def _ref(value):
        if value is None:
            raise ValueError("this loss needs reference log-probabilities (Loss.needs_reference)")
        return value


@dataclass
class UnpairedLogProbs:
    """N completions with a thumbs up (desirable) or down, for KTO. All (N,) float32 except ``kl``."""

    logps: Tensor  # log π_θ(y | x)
    ref: Tensor  # log π_ref(y | x)
    desirable: Tensor  # bool
    kl: Tensor  # 0-d: the reference point z_ref = max(0, mean KL estimate over mismatched pairs), no gradient

    @property
    def logratios(self) -> Tensor:
        return self.logps - self.ref


@dataclass(frozen=True)
class PreferenceParams:
    """The hyper-parameters a loss may read (from the method's ``train:`` section)."""

    beta: float = 0.1  # β: the inverse temperature of the implicit reward (IPO: τ; ORPO: λ)
    label_smoothing: float = 0.0  # ε: the probability that a preference label is flipped (cDPO, robust, EXO)
    gamma: float = 0.0  # γ: SimPO's target reward margin


class _Deferred:
    """A loss function imported from its module on first use; ``__doc__`` is the function's docstring."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def load(self):
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.name)

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)

    @property
    def __doc__(self):  # noqa: D105
        return self.load().__doc__

    def __repr__(self) -> str:
        return f"<loss {__name__}.{self.module}.{self.name}>"


# name -> (module, function, family, needs a reference, description)
BUILTIN = {
    "sigmoid": ("dpo", "sigmoid", "preference", True, "DPO: -log σ(β Δ), Δ the difference of the log-ratios"),
    "hinge": ("dpo", "hinge", "preference", True, "SLiC hinge: max(0, 1 - β Δ)"),
    "ipo": ("dpo", "ipo", "preference", True, "IPO: (Δ per token - 1/(2β))², length-normalised"),
    "cdpo": ("dpo", "cdpo", "preference", True, "conservative DPO: labels flipped with probability label_smoothing"),
    "robust": ("dpo", "robust", "preference", True, "robust DPO: unbiased under label noise label_smoothing"),
    "bco_pair": ("dpo", "bco_pair", "preference", True, "BCO on pairs: -log σ(β r_c) - log σ(-β r_r)"),
    "sppo_hard": ("dpo", "sppo_hard", "preference", True, "SPPO, hard labels: squared distance of r to ±1/(2β)"),
    "nca_pair": ("dpo", "nca_pair", "preference", True, "NCA on pairs: absolute likelihoods, not only their gap"),
    "apo_zero": ("dpo", "apo_zero", "preference", True, "APO-zero: raise chosen, lower rejected likelihood"),
    "apo_down": ("dpo", "apo_down", "preference", True, "APO-down: lower both, the rejected more"),
    "exo_pair": ("dpo", "exo_pair", "preference", True, "EXO: reverse KL to the label distribution (ε = label_smoothing)"),
    "sft": ("nll", "sft", "preference", False, "NLL of the chosen reply, per token"),
    "orpo": ("reference_free", "orpo", "preference", False, "ORPO odds-ratio term: -β log σ(log odds_c - log odds_r)"),
    "simpo": ("reference_free", "simpo", "preference", False, "SimPO: -log σ(β (mean log p_c - mean log p_r) - γ)"),
    "cpo": ("reference_free", "cpo", "preference", False, "CPO: -log σ(β (log p_c - log p_r)), no reference"),
    "kto": ("kto", "kto", "unpaired", True, "KTO: 1 - σ(β (r - z_ref)) desirable, 1 - σ(β (z_ref - r)) undesirable"),
    "apo_zero_unpaired": ("kto", "apo_zero_unpaired", "unpaired", True, "APO-zero on unpaired feedback"),
}


def register_builtin_losses(register) -> None:
    from oa_core.extensions import Loss

    for name, (module, function, family, needs_reference, description) in BUILTIN.items():
        register(name, Loss(_Deferred(module, function), family, description, needs_reference))
