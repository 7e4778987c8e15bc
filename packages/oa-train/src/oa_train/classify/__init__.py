"""Sequence classification: ``ClassificationConfig`` + ``ClassificationObjective`` on the shared loop, and the
``classification`` losses."""

from oa_train.classify.config import ClassificationConfig

__all__ = ["ClassificationConfig", "ClassificationObjective"]


def __getattr__(name):
    if name == "ClassificationObjective":  # torch loads only when it is used
        from oa_train.classify.objective import ClassificationObjective

        return ClassificationObjective
    raise AttributeError(name)
