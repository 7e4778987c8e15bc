"""Supervised fine-tuning and continued pretraining: ``SFTConfig`` + ``SFTObjective`` on the shared loop."""

from oa_train.sft.config import SFTConfig

__all__ = ["SFTConfig", "SFTObjective", "run_sft"]


def __getattr__(name):
    if name in ("SFTObjective", "run_sft"):  # torch loads only when they are used
        from oa_train.sft import objective

        return getattr(objective, name)
    raise AttributeError(name)
