"""The contract between `oa` packages and plugins: every extension point is one hook below.

A plugin is a module (or object) with functions decorated by ``@hookimpl`` whose names match these
specs, found through the ``oa`` entry-point group::

    # pyproject.toml of a third-party plugin
    [project.entry-points.oa]
    my_plugin = "my_package.plugin"

    # my_package/plugin.py
    from oa_core import RewardFunction, hookimpl

    @hookimpl
    def register_reward_functions(register):
        register("has_answer", RewardFunction(lambda prompts, completions, **kw: [float("####" in c) for c in completions]))

``register_*`` hooks receive ``register(name, obj, **info)``; ``obj`` must be of the type the hook names
(from :mod:`oa_core.extensions`). The plugin manager calls each plugin's implementation separately, so every
registered name knows the plugin and distribution that provided it; a name registered twice is an error
naming both, and an implementation whose name matches no spec here is a failure of its plugin (with the closest
hook name). Built-ins of the ``oa-*`` packages register through these same hooks. ``docs/plugins.md`` has
a runnable example for every hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("oa")
hookimpl = pluggy.HookimplMarker("oa")

Register = Callable[..., None]  # register(name: str, obj, **info)


def _registers(kind: str):
    """Mark a ``register_*`` spec with the registry kind its entries get."""

    def mark(spec):
        spec.oa_kind = kind
        return spec

    return mark


# ---------------------------------------------------------------- data


@hookspec
@_registers("dataset_format")
def register_dataset_formats(register: Register) -> None:
    """Register :class:`~oa_core.extensions.DatasetFormat` objects: raw rows -> core records (``oa_core.schema``).

    A dataset entry of a run config names its format (``datasets: [{path: ..., format: NAME}]``).
    """


@hookspec
@_registers("chat_template")
def register_chat_templates(register: Register) -> None:
    """Register named :class:`~oa_core.extensions.ChatTemplate` objects (``data.chat_template: NAME``)."""


# ---------------------------------------------------------------- models


@hookspec
@_registers("model_patch")
def register_model_patches(register: Register) -> None:
    """Register :class:`~oa_core.extensions.ModelPatch` objects, applied by name from ``model.patches``.

    A patch declares the ``config.model_type`` values it supports and swaps modules or functions of a
    loaded model in place (Triton kernels, attention). What it did goes into the run manifest.
    """


# ---------------------------------------------------------------- training


@hookspec
@_registers("method")
def register_methods(register: Register) -> None:
    """Register training methods: :class:`~oa_core.extensions.Method` (a config model for the ``train:``
    section + an objective for oa-train's shared loop). ``oa train CONFIG`` dispatches on ``method:``."""


@hookspec
@_registers("loss")
def register_losses(register: Register) -> None:
    """Register :class:`~oa_core.extensions.Loss` functions, which methods select by name."""


@hookspec
@_registers("reward_function")
def register_reward_functions(register: Register) -> None:
    """Register :class:`~oa_core.extensions.RewardFunction` objects scoring completions (RL, rejection sampling)."""


# ---------------------------------------------------------------- generation and augmentation


@hookspec
@_registers("generator")
def register_generators(register: Register) -> None:
    """Register :class:`~oa_core.extensions.Generator` backends (local model, inference server, API)."""


@hookspec
@_registers("augmenter")
def register_augmenters(register: Register) -> None:
    """Register :class:`~oa_core.extensions.Augmenter` objects: ``augment(record, ctx)`` makes new records from
    one input record (``ctx``: an :class:`~oa_core.extensions.AugmentContext` with the generator, the prompt
    template, options and the record's seed); ``oa augment`` journals, resumes, filters and records provenance."""


# ---------------------------------------------------------------- configuration


@hookspec
@_registers("config_section")
def register_config_sections(register: Register) -> None:
    """Register top-level run-config sections: ``register(name, PydanticModel)``.

    A section is validated strictly like the rest of the config, appears in ``oa config schema``, and is
    read with ``run_config.section(name, PydanticModel)``.
    """


@hookspec
def check_config(config: Any) -> list[tuple[str, str]]:
    """Check rules that span sections of a validated run config (``config``: the ``RunConfig`` with every
    section); return ``(key.path, message)`` problems. ``oa config validate`` and ``oa train`` report all
    problems of all plugins at once, each with the file that set the key. Read the config only: no models,
    no network."""


# ---------------------------------------------------------------- command line


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``oa`` command line; ``cli`` is the root ``click.Group``.

    A plugin whose commands fail to load is reported by name; other commands keep working.
    """


KINDS: dict[str, str] = {
    name: spec.oa_kind for name, spec in list(globals().items()) if callable(spec) and hasattr(spec, "oa_kind")
}
"""Hook name -> registry kind, for every ``register_*`` hook that fills the registry."""
