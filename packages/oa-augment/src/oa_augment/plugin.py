"""Hook implementations of oa-augment (registered through the ``oa`` entry point): the built-in augmenters, the
``openai`` generator (an OpenAI-compatible HTTP endpoint) and ``oa augment``. Nothing heavy is imported here."""

from __future__ import annotations

from oa_core import hookimpl


def _load_openai(settings=None, **kwargs):
    from oa_augment.openai_http import load_openai

    return load_openai(settings, **kwargs)


@hookimpl
def register_generators(register):
    from oa_augment.openai_http import OpenAISettings
    from oa_core.extensions import Generator

    register("openai", Generator(_load_openai, "an OpenAI-compatible HTTP endpoint (vLLM/llama.cpp servers, TGI, "
                                 "hosted APIs): concurrent requests, retries with backoff, rate limit", OpenAISettings))


@hookimpl
def register_augmenters(register):
    from oa_augment.augmenters import builtin_augmenters

    for name, augmenter in builtin_augmenters().items():
        register(name, augmenter)


@hookimpl
def register_commands(cli):
    from oa_augment.cli import augment

    cli.add_command(augment)
