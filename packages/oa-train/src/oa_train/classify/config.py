"""The ``train:`` section of ``method: classification``. Pure pydantic: no torch at import."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from oa_core.config import RegistryRef
from oa_train.training.config import LoopConfig

DEFAULT_LOSS = {"single_label": "softmax_ce", "multi_label": "sigmoid_bce"}


class ClassificationConfig(LoopConfig):
    """Options of sequence classification: a score per class, read at the last token of each sequence."""

    num_labels: int = Field(2, ge=1, description="number of classes (the size of the score head)")
    problem_type: Literal["single_label", "multi_label"] = Field(
        "single_label", description="single_label: one class per record (softmax cross-entropy); multi_label: a list "
        "of classes per record (a sigmoid binary cross-entropy per class)")
    loss: Annotated[str, RegistryRef("loss")] | None = Field(
        None, description="a registered loss of family 'classification' (oa plugins list --kind loss); default: "
        "softmax_ce for single_label, sigmoid_bce for multi_label")
    class_weights: list[Annotated[float, Field(ge=0)]] | None = Field(
        None, description="a weight per class (num_labels of them): single_label: weighted cross-entropy, normalised "
        "by the summed weights of the labels as torch does; multi_label: the weight of each class's terms")
    padding_free: bool = Field(
        True, description="the micro-batch's sequences in one packed row (position ids restarting per sequence, no "
        "padding; flex attention on a GPU unless model.attn_implementation says otherwise); false: a padded batch")

    @model_validator(mode="after")
    def _default_loss(self) -> ClassificationConfig:
        if self.loss is None:
            self.loss = DEFAULT_LOSS[self.problem_type]
        return self
