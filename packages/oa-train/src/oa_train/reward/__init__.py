"""Reward models: ``RMConfig`` + ``RMObjective`` on the shared loop, and the ``reward`` losses."""

from oa_train.reward.config import RMConfig

__all__ = ["RMConfig", "RMObjective", "run_rm"]


def __getattr__(name):
    if name in ("RMObjective", "run_rm"):  # torch loads only when they are used
        from oa_train.reward import objective

        return getattr(objective, name)
    raise AttributeError(name)
