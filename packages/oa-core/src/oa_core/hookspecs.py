"""The contract between `oa` packages and plugins.

Every extension point of `oa` is one hook below. A plugin is a module (or object) with functions
decorated by ``@hookimpl`` whose names match these specs; it is found through the ``oa`` entry-point
group::

    # pyproject.toml of a third-party plugin
    [project.entry-points.oa]
    my_plugin = "my_package.plugin"

    # my_package/plugin.py
    from oa_core import hookimpl

    @hookimpl
    def register_reward_functions(register):
        register("has_answer", lambda prompts, completions, **kw: [float("####" in c) for c in completions])

All ``register_*`` hooks receive a ``register(name, obj, **info)`` callable. The plugin manager calls
each plugin's implementation separately, so every registered name knows the plugin and distribution
that provided it; a name registered twice is an error naming both providers. Built-in formats,
templates, patches, losses, rewards and methods of the ``oa-*`` packages register through these same
hooks.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("oa")


@hookspec
def register_dataset_formats(register):
    """Register dataset formats: ``register(name, DatasetFormat(...))``.

    A format turns one raw row (a dict read from jsonl/json/csv/parquet/arrow or a hub dataset) into
    one core record (see ``oa_core.schema``), e.g. ``alpaca`` → ``Conversation``. Its field names can be
    remapped per dataset in the run config (``field_map``).
    """


@hookspec
def register_chat_templates(register):
    """Register named chat templates: ``register(name, ChatTemplate(...))`` (jinja text rendered in a
    sandboxed environment, plus the markers the masker needs)."""


@hookspec
def register_model_patches(register):
    """Register model patches: ``register(name, ModelPatch(...))``.

    A patch declares the model architectures (``config.model_type`` values) it supports and an
    ``apply(model, options)`` that swaps modules or functions in place (Triton kernels, attention
    implementations). Patches are applied by name from the run config and listed in the run manifest.
    """


@hookspec
def register_losses(register):
    """Register training losses: ``register(name, fn, kind="sft"|"preference"|"reward")``."""


@hookspec
def register_reward_functions(register):
    """Register RL reward functions: ``register(name, fn)`` with
    ``fn(prompts: list[str], completions: list[str], **columns) -> list[float]``."""


@hookspec
def register_augmenters(register):
    """Register data augmenters: ``register(name, Augmenter(...))`` (LLM-driven rewriting, translation,
    answer generation; used by ``oa augment``)."""


@hookspec
def register_methods(register):
    """Register training methods: ``register(name, Method(config=PydanticModel, run=callable))``.

    ``oa train CONFIG`` dispatches on the config's ``method:``; the method's pydantic model validates
    the ``train:`` section.
    """


@hookspec
def register_config_sections(register):
    """Register plugin-contributed top-level config sections: ``register(name, PydanticModel)``.

    The section is validated with ``extra="forbid"`` like the rest of the config and appears in
    ``oa config schema``.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``oa`` command line: ``cli`` is the root ``click.Group``.

    Packages add their command groups here (``oa train``, ``oa data``, ``oa infer`` ...). A plugin whose
    commands fail to load is reported by name; other commands keep working.
    """
