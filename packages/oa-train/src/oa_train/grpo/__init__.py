"""GRPO and its variants (``method: grpo``): a config (:mod:`oa_train.grpo.config`) and an objective
(:mod:`oa_train.grpo.objective`) on the shared loop, losses of family ``grpo`` (:mod:`oa_train.grpo.losses`),
group-relative advantages (:mod:`oa_train.grpo.advantages`), reward calls that never stop a run
(:mod:`oa_train.grpo.rewards`), prompts (:mod:`oa_train.grpo.data`) and rollouts (:mod:`oa_train.grpo.rollout`)."""

from oa_train.grpo.config import GRPOConfig

__all__ = ["GRPOConfig", "run_grpo"]


def __getattr__(name):  # torch loads only when a run starts
    if name == "run_grpo":
        from oa_train.grpo.objective import run_grpo

        return run_grpo
    raise AttributeError(name)
