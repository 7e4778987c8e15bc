"""Apply registered model patches (``register_model_patches``) by name, and describe them for the manifest."""

from __future__ import annotations

from typing import Any

from oa_core.errors import OAError, PluginError
from oa_core.extensions import PatchResult
from oa_core.plugins import Registry, unknown_name_message


def model_type(model) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def apply_patches(
    model, names: list[str], registry: Registry, options: dict[str, dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Apply the patches ``names`` in order; returns one manifest entry per patch and the capabilities the
    applied patches provide (``PatchResult.provides``; a later patch wins).

    Every name is checked (known, supports ``model.config.model_type``) before any patch is applied.
    ``options`` maps a patch name to the keyword arguments of its ``apply``.
    """
    options = options or {}
    arch = model_type(model)
    entries = []
    for i, name in enumerate(names):
        key = f"model.patches.{i}"
        try:
            entry = registry.entry("model_patch", name)
        except PluginError as e:
            raise PluginError(f"{key}: {e.message}", hint=e.hint) from None
        except OAError:
            msg = unknown_name_message("model patch", name, registry.names("model_patch"))
            raise OAError(f"{key}: {msg}", hint="see `oa plugins list`") from None
        if not entry.obj.supports(arch):
            raise OAError(
                f"{key}: patch '{name}' does not support architecture '{arch}' "
                f"(supports: {', '.join(entry.obj.architectures)})",
                hint="remove it from model.patches or use a model of a supported architecture",
            )
        entries.append(entry)
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise OAError(f"patch options given for '{unknown[0]}', which is not in model.patches")
    manifest, provides = [], {}
    for i, entry in enumerate(entries):
        try:
            result = entry.obj.apply(model, **options.get(entry.name, {}))
        except OAError:
            raise
        except Exception as e:
            raise PluginError(
                f"model.patches.{i}: patch '{entry.name}' ({entry.provider.distribution}) failed: "
                f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                hint="report it to the plugin's authors, or remove the patch",
            ) from e
        if not isinstance(result, PatchResult):
            result = PatchResult(str(result or entry.obj.description))
        provides.update(result.provides)
        manifest.append(
            {
                "name": entry.name,
                "provider": entry.provider.distribution,
                "version": entry.provider.version,
                "plugin": entry.provider.plugin,
                "applied": result.applied,
                "provides": sorted(result.provides),
                "description": result.description,
            }
        )
    return manifest, provides
