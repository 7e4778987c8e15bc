"""Validation of run configs: the schema (with plugin sections and the method's ``train:`` model), every
plugin name a config uses, and the plugins' cross-section rules — all problems at once, each as
``file: key.path: message``."""

from __future__ import annotations

import difflib
import inspect
import json
import math
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, create_model

from oa_core.config.effective import redact
from oa_core.config.layers import DEFAULT, apply_overrides, covers, flatten, load_layers
from oa_core.config.settings import RegistryRef, RunConfig
from oa_core.errors import ConfigError, OAError
from oa_core.packages import missing_package
from oa_core.plugins import Registry, get_registry


@dataclass
class LoadedConfig:
    """A validated config, the file it came from, and the origin of every value (dotted key -> origin)."""

    config: Any  # a RunConfig with the plugin sections and the method's train model
    path: Path
    sources: dict[str, str]

    def effective(self) -> dict[str, Any]:
        return redact(self.config.model_dump(mode="json"))


def config_model(registry: Registry, method: str | None = None) -> type[RunConfig]:
    """The run-config model with plugin sections and the ``train`` model of ``method`` (or of all)."""
    fields: dict[str, Any] = {}
    for entry in registry.entries("config_section"):
        fields[entry.name] = (entry.obj | None, Field(None, description=section_description(entry)))
    if method is not None:
        train_model = registry.get("method", method).config
        fields["train"] = (train_model, Field(default_factory=train_model, description=f"options of method '{method}'"))
    else:
        methods = [e.obj.config for e in registry.entries("method")]
        if methods:
            union = methods[0] if len(methods) == 1 else Union[tuple(methods)]  # noqa: UP007
            fields["train"] = (union, Field(default=None, description="options of the chosen method"))
    return create_model("RunConfig", __base__=RunConfig, **fields)


def section_description(entry: Any) -> str:
    """A plugin section's description: the first paragraph of its model's docstring, else who registers it."""
    doc = inspect.cleandoc(entry.obj.__doc__ or "").split("\n\n")[0]
    return " ".join(doc.replace("``", "`").split()) or (
        f"options of plugin '{entry.provider.plugin}' ({entry.provider.distribution})")


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of run configs, including plugin-contributed sections and every method's options."""
    schema = config_model(registry or get_registry()).model_json_schema()
    schema["properties"]["include"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        "description": "base config file(s) to extend, relative to this file",
    }
    return schema


def validate_config(data: dict[str, Any], sources: dict[str, str], file: str, registry: Registry | None = None):
    """Validate merged config data; raises :class:`ConfigError` listing every problem."""
    registry = registry or get_registry()
    problems = [f"{origin_file(key, sources, file)}: {key}: must be a finite number (got {value})"
                for key, value in _non_finite(data)]
    method = data.get("method")
    try:
        model = config_model(registry, method if isinstance(method, str) else None)
    except OAError as e:
        problems.append(f"{origin_file('method', sources, file)}: method: {missing_package('method', method) or e}")
        model = config_model(registry)
        data = {k: v for k, v in data.items() if k not in ("method", "train")} | {"method": "?"}
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        problems.extend(_schema_problems(e, model, sources, file))
        raise ConfigError(problems) from None
    named = [(key, msg) for key, msg in name_problems(cfg, registry) if key != "method"]  # reported above
    problems += [f"{origin_file(key, sources, file)}: {key}: {msg}" for key, msg in (*named, *registry.check_config(cfg))]
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None, registry: Registry | None = None) -> LoadedConfig:
    """Read, merge, override and validate a run config."""
    path = Path(path)
    data, sources = load_layers(path)
    data, sources = apply_overrides(data, sources, list(overrides or []))
    cfg = validate_config(data, sources, str(path), registry)
    for key in flatten(cfg.model_dump(mode="json")):
        if not any(covers(key, k) for k in sources):
            sources[key] = DEFAULT
    return LoadedConfig(cfg, path, dict(sorted(sources.items())))


def _non_finite(value: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """Every ``inf``/``nan`` in the raw config (YAML ``.inf``, JSON ``Infinity``): no option takes one."""
    if isinstance(value, float) and not math.isfinite(value):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _non_finite(v, f"{key}.{i}")


# ---------------------------------------------------------------- plugin names


def name_problems(cfg: BaseModel, registry: Registry) -> list[tuple[str, str]]:
    """``(key.path, message)`` for every :class:`RegistryRef` field whose name is not registered once."""
    out = []
    for key, ref, name in registry_refs(cfg):
        if name in ref.also:
            continue
        try:
            registry.entry(ref.kind, name)
        except OAError as e:
            also = f" or {', '.join(repr(a) for a in ref.also)}" if ref.also and "did you mean" not in e.message else ""
            out.append((key, f"{e.message}{also}" + (f" ({e.hint})" if e.hint else "")))
    return out


def registry_refs(value: Any, annotation: Any = None, key: str = "") -> Iterator[tuple[str, RegistryRef, str]]:
    """``(key.path, ref, name)`` for every string in ``value`` whose field carries a :class:`RegistryRef`."""
    ref, annotation = _ref_of(annotation)
    if ref is not None and isinstance(value, str):
        yield key, ref, value
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            field_type = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            yield from registry_refs(getattr(value, name), field_type, f"{key}.{name}" if key else name)
    elif isinstance(value, list | tuple):
        item = _member(annotation, list)
        for i, v in enumerate(value):
            yield from registry_refs(v, item, f"{key}.{i}")
    elif isinstance(value, dict):
        item = _member(annotation, dict)
        for k, v in value.items():
            yield from registry_refs(v, item, f"{key}.{k}")


def _ref_of(annotation: Any) -> tuple[RegistryRef | None, Any]:
    """The RegistryRef of an ``Annotated[...]`` (or of the one member of ``X | None`` that is), and the type."""
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        return next((m for m in meta if isinstance(m, RegistryRef)), None), base
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            ref, base = _ref_of(arg)
            if ref is not None:
                return ref, base
    return None, annotation


def _member(annotation: Any, container: type) -> Any:
    """The item type of ``list[X]`` / value type of ``dict[K, X]`` in ``annotation`` (also inside a union)."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    for option in options:
        if get_origin(option) is Annotated:
            option = get_args(option)[0]
        if get_origin(option) is container and get_args(option):
            return get_args(option)[-1]
    return None


# ---------------------------------------------------------------- schema problems


def origin_file(key: str, sources: dict[str, str], default: str) -> str:
    """The file (or ``--set``) that set ``key`` or the nearest key around it."""
    while key:
        if key in sources and sources[key] != DEFAULT:
            return sources[key]
        hits = [v for k, v in sources.items() if k.startswith(key + ".")]
        if hits:
            return hits[0]
        key = key.rpartition(".")[0]
    return default


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, list, dict) or get_args(annotation):
        for arg in get_args(annotation):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        nxt = _unwrap_model(field.annotation)
        if nxt is None:
            return None
        model = nxt
    return model


def _schema_problems(err: ValidationError, model: type[BaseModel], sources: dict[str, str], file: str) -> list[str]:
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"])
        key = ".".join(str(p) for p in loc)
        origin = origin_file(key, sources, file)
        if e["type"] == "extra_forbidden" and len(loc) == 1 and (missing := missing_package("config_section", key)):
            out.append(f"{origin}: {key}: {missing}")
        elif e["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            known = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else (f" (allowed: {', '.join(known)})" if known else "")
            out.append(f"{origin}: {key}: unknown key{hint}")
        elif e["type"] == "missing":
            out.append(f"{origin}: {key}: required key is missing")
        else:
            msg = e["msg"]
            if e["type"] not in ("value_error", "assertion_error"):
                msg = f"{msg} (got {json.dumps(e.get('input'), default=str)[:60]})"
            out.append(f"{origin}: {key or '<top>'}: {msg.removeprefix('Value error, ')}")
    return out
