"""Hook implementations of oa_train (registered through the `oa` entry point). Nothing heavy is imported
here: configs are pure pydantic, and the objectives (torch, transformers) load when a run starts."""

from __future__ import annotations

from oa_core import hookimpl
from oa_core.extensions import Loss, Method


def _sft_objective():
    from oa_train.sft.objective import SFTObjective

    return SFTObjective()


def _rm_objective():
    from oa_train.reward.objective import RMObjective

    return RMObjective()


def _grpo_objective():
    from oa_train.grpo.objective import GRPOObjective

    return GRPOObjective()


def _classification_objective():
    from oa_train.classify.objective import ClassificationObjective

    return ClassificationObjective()


@hookimpl
def register_methods(register):
    from oa_train.classify.config import ClassificationConfig
    from oa_train.grpo.config import GRPOConfig
    from oa_train.reward.config import RMConfig
    from oa_train.sft.config import SFTConfig

    register("sft", Method(SFTConfig, _sft_objective, "supervised fine-tuning (packed or padded)"))
    register("pretrain", Method(SFTConfig, _sft_objective, "continued pretraining on text data (the SFT objective)"))
    register("rm", Method(RMConfig, _rm_objective, "reward model: a score per reply, ranking replies (pairs, rankings)"))
    register("classification", Method(ClassificationConfig, _classification_objective,
                                      "sequence classification (single- or multi-label)"))
    register("grpo", Method(GRPOConfig, _grpo_objective, "GRPO family (GRPO, DAPO, Dr. GRPO, GSPO): completions "
                            "sampled from the policy, scored by reward functions, group-relative advantages"))

    from oa_train.preference import register_methods as register_preference_methods

    register_preference_methods(register)


@hookimpl
def register_losses(register):
    from oa_train.classify.losses import LOSSES as CLASSIFICATION
    from oa_train.grpo.losses import LOSSES as GRPO
    from oa_train.reward.losses import LOSSES as REWARD

    for family, losses in (("reward", REWARD), ("classification", CLASSIFICATION)):
        for name, (fn, description) in losses.items():
            register(name, Loss(fn, family, description))
    for name, (fn, description) in GRPO.items():
        register(name, Loss(fn, "grpo", description, needs_reference=False))

    from oa_train.preference.losses import register_builtin_losses
    register_builtin_losses(register)


@hookimpl
def register_config_sections(register):
    from oa_train.model.settings import register_sections

    register_sections(register)


@hookimpl
def check_config(config):
    from oa_train.checks import check_run_config
    from oa_train.grpo.checks import check_grpo
    from oa_train.preference.checks import check_preference_config
    from oa_train.reward.checks import check_scored_method

    return (check_run_config(config) + check_scored_method(config) + check_preference_config(config)
            + check_grpo(config))


@hookimpl
def register_commands(cli):
    from oa_train.cli import add_commands

    add_commands(cli)
