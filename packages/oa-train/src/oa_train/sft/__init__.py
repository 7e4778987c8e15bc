"""Supervised fine-tuning (and continued pretraining on ``{"text"}`` data): ``SFTConfig`` + ``run_sft``."""

from oa_train.sft.config import SFTConfig

__all__ = ["SFTConfig", "run_sft"]


def __getattr__(name):
    if name == "run_sft":
        from oa_train.sft.recipe import run_sft

        return run_sft
    raise AttributeError(name)
