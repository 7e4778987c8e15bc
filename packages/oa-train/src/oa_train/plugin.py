"""Hook implementations of oa_train (registered through the `oa` entry point). Nothing heavy is imported
here: the SFT config is pure pydantic and the recipe (torch, transformers) loads when a run starts."""

from __future__ import annotations

from oa_core import hookimpl
from oa_core.extensions import Method


def _run_sft(loaded, **kwargs):
    from oa_train.sft.recipe import run_sft

    return run_sft(loaded, **kwargs)


@hookimpl
def register_methods(register):
    from oa_train.sft.config import SFTConfig

    register("sft", Method(config=SFTConfig, run=_run_sft, description="supervised fine-tuning (packed or padded)"))
    register("pretrain", Method(config=SFTConfig, run=_run_sft, description="continued pretraining on text data (SFT recipe)"))


@hookimpl
def register_config_sections(register):
    from oa_train.model.settings import register_sections

    register_sections(register)


@hookimpl
def register_commands(cli):
    from oa_train.cli import add_commands

    add_commands(cli)
