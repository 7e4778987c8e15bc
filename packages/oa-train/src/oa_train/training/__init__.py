"""One training loop for every method (:mod:`~oa_train.training.loop`) and what it is built from: the
objective contract, the loop's config, label log-probabilities, batching and data order, optimizers and
schedules, checkpoints, run logs."""

from oa_train.training.config import LoopConfig

__all__ = ["Evaluation", "LabelLogProbs", "Loop", "LoopConfig", "Objective", "Run", "StepLoss", "TokenLogProbs"]


def __getattr__(name):  # torch loads only when these are used
    if name in ("Evaluation", "Objective", "Run", "StepLoss"):
        from oa_train.training import objective

        return getattr(objective, name)
    if name in ("LabelLogProbs", "TokenLogProbs"):
        from oa_train.training import logprobs

        return getattr(logprobs, name)
    if name == "Loop":
        from oa_train.training.loop import Loop

        return Loop
    raise AttributeError(name)
