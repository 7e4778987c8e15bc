"""Hook implementations of oa-infer (registered through the ``oa`` entry point): the ``hf`` and ``vllm``
generators, the built-in reward functions and ``oa infer``. Nothing heavy is imported here: the engines load torch, transformers or vLLM
when one is made."""

from __future__ import annotations

from oa_core import hookimpl


def _load_hf(settings=None, **kwargs):
    from oa_infer.engines.hf import load_hf

    return load_hf(settings, **kwargs)


def _load_vllm(settings=None, **kwargs):
    from oa_infer.engines.vllm import load_vllm

    return load_vllm(settings, **kwargs)


@hookimpl
def register_generators(register):
    from oa_core.extensions import Generator
    from oa_infer.engines.hf import HFSettings
    from oa_infer.engines.vllm import VLLMSettings

    register("hf", Generator(_load_hf, "transformers generate: batched, LoRA adapters, stop strings, log-probs",
                             HFSettings))
    register("vllm", Generator(_load_vllm, "vLLM offline engine: tensor parallel, LoRA adapters "
                               "(pip install 'oa-infer[vllm]')", VLLMSettings))


@hookimpl
def register_reward_functions(register):
    from oa_infer.rewards import register as register_rewards

    register_rewards(register)


@hookimpl
def register_commands(cli):
    from oa_infer.cli import add_commands

    add_commands(cli)
