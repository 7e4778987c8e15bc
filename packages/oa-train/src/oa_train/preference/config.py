"""The ``train:`` sections of the preference methods: the loop's options (``LoopConfig``) plus the method's
loss terms, hyper-parameters and reference model. Pure pydantic: no torch at import."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from oa_core.config import RegistryRef
from oa_train.training.config import LoopConfig

LossName = Annotated[str, RegistryRef("loss")]


class ReferenceSettings(BaseModel):
    """Where the reference model's log-probabilities come from. The reference is always the policy's starting
    weights."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["auto", "copy", "adapters_off"] = Field(
        "auto", description="copy: a frozen copy of the starting model (a second model in memory); adapters_off: "
        "the policy itself with its PEFT adapters disabled (no second model; needs peft.method); auto: adapters_off "
        "when a new PEFT adapter is trained, else copy")
    precompute: bool = Field(
        False, description="compute the reference log-probs of every train and eval example once, before the first "
        "step, and cache them on disk (keyed by a hash of the reference weights, the tokenized data and the settings "
        "that change the numbers); no reference model during training, none loaded when the cache is complete, and "
        "a run killed while precomputing continues where it stopped")
    batch_size: int | None = Field(
        None, ge=1, description="pairs (KTO: examples) per forward while precomputing; default: "
        "per_device_eval_batch_size, else per_device_batch_size")
    cache_dir: str | None = Field(
        None, description="folder of the reference log-prob cache (relative: to the working directory); default: "
        "data.cache_dir")


class PreferenceConfig(LoopConfig):
    """Options every preference method shares."""

    padding_free: bool = Field(
        False, description="pack all sequences of a micro-batch (chosen and rejected of every pair) into one row, "
        "position ids restarting per sequence, so no padding is computed; log-probs are summed per sequence (needs "
        "an attention implementation that reads sequence starts from position ids: sdpa, eager, flex, flash; flex on a GPU "
        "unless model.attn_implementation says otherwise)")

    rewards_from_means: ClassVar[bool] = False  # without a reference, the reward is β × the mean token log-prob

    def terms(self) -> list[tuple[str, float]]:
        """The loss terms ``(registered loss name, weight)`` summed into the loss."""
        raise NotImplementedError

    def params(self):
        from oa_train.preference.losses import PreferenceParams

        return PreferenceParams(beta=self.beta, label_smoothing=getattr(self, "label_smoothing", 0.0),
                                gamma=getattr(self, "gamma", 0.0))


class DPOConfig(PreferenceConfig):
    """Direct preference optimisation and its family: one loss or a weighted sum of losses (TRL's
    ``loss_type`` / ``loss_weights``), against a reference model."""

    beta: float = Field(0.1, gt=0, description="β: how far the policy may move from the reference (higher: less); "
                        "for ipo the regularisation τ")
    loss_type: list[LossName] = Field(
        default_factory=lambda: ["sigmoid"], description="a registered preference loss or a list summed with "
        "loss_weights: sigmoid, hinge, ipo, cdpo, robust, bco_pair, sppo_hard, nca_pair, apo_zero, apo_down, "
        "exo_pair, sft, simpo, cpo, orpo, or a plugin's (oa plugins list --kind loss)")
    loss_weights: list[float] | None = Field(
        None, description="one weight per loss_type entry (default: 1 each), e.g. [1.0, 0.2] for [sigmoid, sft]")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="ε: the probability that a preference label is flipped (cdpo, robust); EXO's "
        "label smoothing (exo_pair, needs ε > 0, the paper: 1e-3)")
    reference: ReferenceSettings = Field(default_factory=ReferenceSettings, description="the reference model")

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _weights(self) -> DPOConfig:
        if not self.loss_type:
            raise ValueError("loss_type needs at least one loss")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} entries, loss_type {len(self.loss_type)}")
        return self

    def terms(self) -> list[tuple[str, float]]:
        return list(zip(self.loss_type, self.loss_weights or [1.0] * len(self.loss_type), strict=True))


class KTOConfig(PreferenceConfig):
    """KTO: completions labelled desirable or undesirable (unpaired), against a reference model. The loss is
    averaged per completion."""

    beta: float = Field(0.1, gt=0, description="β: how far the policy may move from the reference (higher: less)")
    loss_type: LossName = Field(
        "kto", description="a registered unpaired loss: kto (with the KL reference point z_ref), apo_zero_unpaired")
    desirable_weight: float = Field(1.0, gt=0, description="λ_D: weight of the desirable completions' losses")
    undesirable_weight: float = Field(
        1.0, gt=0, description="λ_U: weight of the undesirable completions' losses; the paper keeps λ_D n_D / "
        "(λ_U n_U) in [1, 4/3] (n: the counts, shown at the start of a run)")
    reference: ReferenceSettings = Field(default_factory=ReferenceSettings, description="the reference model")

    def terms(self) -> list[tuple[str, float]]:
        return [(self.loss_type, 1.0)]


class ORPOConfig(PreferenceConfig):
    """ORPO: the chosen reply's NLL plus λ × the odds-ratio term, on average token log-probs; no reference."""

    beta: float = Field(0.1, gt=0, description="λ: the weight of the odds-ratio term (TRL's beta)")

    rewards_from_means: ClassVar[bool] = True

    def terms(self) -> list[tuple[str, float]]:
        return [("sft", 1.0), ("orpo", 1.0)]


class SimPOConfig(PreferenceConfig):
    """SimPO: average token log-probs as rewards with a target margin γ; no reference. ``cpo_alpha > 0`` adds the
    chosen reply's NLL (CPO-SimPO)."""

    beta: float = Field(2.0, gt=0, description="β: the reward scale (the paper: 2.0-2.5)")
    gamma: float = Field(1.0, ge=0, description="γ: the target reward margin (the paper: γ/β about 0.3-0.5)")
    cpo_alpha: float = Field(0.0, ge=0, description="weight of the chosen reply's NLL (0: pure SimPO)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="ε: the probability that a label is flipped")

    rewards_from_means: ClassVar[bool] = True

    def terms(self) -> list[tuple[str, float]]:
        return [("simpo", 1.0)] + ([("sft", self.cpo_alpha)] if self.cpo_alpha else [])


class CPOConfig(PreferenceConfig):
    """CPO: DPO with a uniform reference (summed log-probs, no reference model) plus ``cpo_alpha`` × the chosen
    reply's NLL."""

    beta: float = Field(0.1, gt=0, description="β: the reward scale")
    cpo_alpha: float = Field(1.0, ge=0, description="weight of the chosen reply's NLL (0: no NLL term)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="ε: the probability that a label is flipped")

    def terms(self) -> list[tuple[str, float]]:
        return [("cpo", 1.0)] + ([("sft", self.cpo_alpha)] if self.cpo_alpha else [])


PAIRWISE: dict[str, type[PreferenceConfig]] = {"dpo": DPOConfig, "orpo": ORPOConfig, "simpo": SimPOConfig,
                                              "cpo": CPOConfig}
Family = Literal["preference", "unpaired"]


def loss_family(train: PreferenceConfig) -> Family:
    return "unpaired" if isinstance(train, KTOConfig) else "preference"
