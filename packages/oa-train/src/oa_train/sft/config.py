"""The ``train:`` section of ``method: sft`` (and ``pretrain``): the loop's options plus generation at
evaluation. Pure pydantic: no torch at import."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from oa_train.training.config import LoopConfig


class GenerationEval(BaseModel):
    """Generate answers for a few held-out examples at each evaluation; score with BLEU and ROUGE."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(0, ge=0, description="held-out examples to generate for (0: off)")
    max_new_tokens: int = Field(64, ge=1, description="longest generated answer (tokens)")


class SFTConfig(LoopConfig):
    """Options of supervised fine-tuning and continued pretraining."""

    generation: GenerationEval = Field(
        default_factory=GenerationEval, description="greedy generation for held-out examples at each evaluation")
