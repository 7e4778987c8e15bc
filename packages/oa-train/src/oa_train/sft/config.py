"""The ``train:`` section of ``method: sft`` (and ``pretrain``): the loop's options plus generation at
evaluation. Pure pydantic: no torch at import."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from oa_train.training.config import LoopConfig


class GenerationEval(BaseModel):
    """Generate greedy answers for a few held-out examples at each evaluation; score them as `oa eval` does."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(0, ge=0, description="held-out examples to generate for (0: off)")
    max_new_tokens: int = Field(64, ge=1, description="longest generated answer (tokens)")
    metrics: list[Literal["bleu", "rouge", "exact_match", "accuracy"]] = Field(
        default_factory=lambda: ["bleu", "rouge"], min_length=1,
        description="scores of the answers, logged as eval_<key>: bleu (eval_bleu), rouge (eval_rouge1, eval_rouge2, "
        "eval_rougeL), exact_match, accuracy (final number); as oa eval computes them")

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) < len(value):
            raise ValueError("a metric is listed twice")
        return value


class SFTConfig(LoopConfig):
    """Options of supervised fine-tuning and continued pretraining."""

    generation: GenerationEval = Field(
        default_factory=GenerationEval, description="greedy generation for held-out examples at each evaluation")
