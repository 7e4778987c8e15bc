"""Run configs: YAML/JSON files with ``include``, ``--set`` overrides, strict validation, provenance.

Every problem is reported as ``file: key.path: message`` (with "did you mean" for unknown keys), all
problems at once; the effective config, with where each value came from, is written beside a run's
outputs with secrets redacted.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from oa_core.errors import ConfigError, OAError
from oa_core.io import atomic_write_text
from oa_core.plugins import Registry, get_registry

OVERRIDE = "--set"
DEFAULT = "default"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    """Which model to load and how."""

    path: str = Field(description="local folder or hub id")
    type: Literal["causal", "seq_cls"] = "causal"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = Field(None, description="eager, sdpa, flash_attention_2, flex_attention")
    trust_remote_code: bool = False
    revision: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    adapter_path: str | None = None
    random_init: bool = Field(
        False, description="build the model from the folder's config.json with random weights (seeded by `seed`)"
    )
    patches: list[str] = Field(default_factory=list, description="model patches to apply, by name")


class TokenizerSettings(_Strict):
    path: str | None = Field(None, description="defaults to model.path")
    use_fast: bool = True
    trust_remote_code: bool = False


class DatasetSpec(_Strict):
    """One data source: where it is, which format reads it, how much of it goes into the mix."""

    path: str = Field(description="file, folder or hub dataset id")
    format: str = Field(description="a registered dataset format (oa plugins list)")
    split: str = "train"
    subset: str | None = None
    field_map: dict[str, str] = Field(default_factory=dict, description="canonical field -> column name")
    sample_rate: float | None = Field(None, gt=0)
    num_samples: int | None = Field(None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict, description="format-specific options")
    truncation: Literal["keep_start", "keep_end", "drop", "random_cut"] | None = Field(
        None, description="per-dataset truncation rule; default: data.truncation"
    )
    min_length: int | None = Field(None, ge=1, description="drop samples shorter than this (tokens)")
    max_length: int | None = Field(None, ge=1, description="per-dataset max tokens; default: data.max_length")

    @model_validator(mode="after")
    def _one_amount(self) -> DatasetSpec:
        if self.sample_rate is not None and self.num_samples is not None:
            raise ValueError("give at most one of 'sample_rate' and 'num_samples'")
        return self


class RunConfig(_Strict):
    """The method-independent part of a run config; ``train`` is validated by the method's model."""

    method: str = Field(description="a registered training method (sft, dpo, ...)")
    output_dir: str = "runs/default"
    seed: int = 42
    model: ModelSettings | None = None
    tokenizer: TokenizerSettings = Field(default_factory=TokenizerSettings)
    datasets: list[DatasetSpec] = Field(default_factory=list)
    eval_datasets: list[DatasetSpec] = Field(default_factory=list)
    train: dict[str, Any] = Field(default_factory=dict)


@dataclass
class LoadedConfig:
    """A validated config, the file it came from, and the origin of every value (dotted key -> origin)."""

    config: BaseModel
    path: Path
    sources: dict[str, str]

    def effective(self) -> dict[str, Any]:
        return redact(self.config.model_dump(mode="json"))


# ---------------------------------------------------------------- reading files and layers


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"], hint="check the path")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, not {type(data).__name__}"])
    return data


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_layers(path: Path, _stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Read ``path`` and the files it includes (bases first); returns (data, sources)."""
    path = path.resolve() if path.is_absolute() else path
    if path.resolve() in [p.resolve() for p in _stack]:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError([f"{_stack[-1]}: include: cycle {chain}"])
    data = read_config_file(path)
    includes = data.pop("include", None)
    if isinstance(includes, str):
        includes = [includes]
    if includes is not None and not (isinstance(includes, list) and all(isinstance(i, str) for i in includes)):
        raise ConfigError([f"{path}: include: must be a file path or a list of file paths"])
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for inc in includes or []:
        inc_path = path.parent / inc
        if not inc_path.is_file():
            raise ConfigError([f"{path}: include: '{inc}' not found (looked at {inc_path})"])
        base, base_sources = load_layers(inc_path, (*_stack, path))
        merged = _merge(merged, base)
        sources = {k: v for k, v in sources.items() if k not in base_sources} | base_sources
    merged = _merge(merged, data)
    mine = _flatten(data)
    sources = {k: v for k, v in sources.items() if not any(_covers(m, k) for m in mine)}
    sources.update({k: str(path) for k in mine})
    return merged, sources


def _covers(new_key: str, old_key: str) -> bool:
    return old_key == new_key or old_key.startswith(new_key + ".") or new_key.startswith(old_key + ".")


def apply_overrides(data: dict, sources: dict[str, str], overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML: numbers, booleans, lists)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not p for p in key.split(".")):
            raise ConfigError([f"{OVERRIDE} '{item}': expected key.path=value"], hint="e.g. --set train.learning_rate=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError([f"{OVERRIDE} '{item}': '{'.'.join(parts[:i])}' is not a mapping"])
            node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError([f"{OVERRIDE} '{item}': '{'.'.join(parts[:-1])}' is not a mapping"])
        sources = {k: v for k, v in sources.items() if not _covers(key, k)}
        sources.update({k: OVERRIDE for k in _flatten(value, key)})
        sources[key] = OVERRIDE
    return data, sources


# ---------------------------------------------------------------- validation


def config_model(registry: Registry, method: str | None = None) -> type[BaseModel]:
    """The run-config model with plugin sections and the ``train`` model of ``method`` (or of all)."""
    fields: dict[str, Any] = {}
    for entry in registry.entries("config_section"):
        fields[entry.name] = (entry.obj | None, None)
    if method is not None:
        train_model = registry.get("method", method).config
        fields["train"] = (train_model, Field(default_factory=train_model))
    else:
        methods = [e.obj.config for e in registry.entries("method")]
        if methods:
            union = methods[0] if len(methods) == 1 else Union[tuple(methods)]  # noqa: UP007
            fields["train"] = (union, Field(default=None, description="options of the chosen method"))
    return create_model("RunConfig", __base__=RunConfig, **fields)


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of run configs, including plugin-contributed sections and every method's options."""
    schema = config_model(registry or get_registry()).model_json_schema()
    schema["properties"]["include"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        "description": "base config file(s) to extend, relative to this file",
    }
    return schema


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


def _origin_file(key: str, sources: dict[str, str], default: str) -> str:
    while key:
        if key in sources and sources[key] != DEFAULT:
            return sources[key]
        hits = [v for k, v in sources.items() if k.startswith(key + ".")]
        if hits:
            return hits[0]
        key = key.rpartition(".")[0]
    return default


def _problems(err: ValidationError, model: type[BaseModel], sources: dict[str, str], file: str) -> list[str]:
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"])
        key = ".".join(str(p) for p in loc)
        origin = _origin_file(key, sources, file)
        if e["type"] == "extra_forbidden":
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


def validate_config(data: dict[str, Any], sources: dict[str, str], file: str, registry: Registry | None = None):
    """Validate merged config data; raises :class:`ConfigError` listing every problem."""
    registry = registry or get_registry()
    problems: list[str] = []
    method = data.get("method")
    try:
        model = config_model(registry, method if isinstance(method, str) else None)
    except OAError as e:
        problems.append(f"{_origin_file('method', sources, file)}: method: {e}")
        model = config_model(registry)
        data = {k: v for k, v in data.items() if k not in ("method", "train")}
        data["method"] = "?"
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        problems.extend(_problems(e, model, sources, file))
        raise ConfigError(problems) from None
    problems.extend(_name_problems(cfg, registry, sources, file))
    if problems:
        raise ConfigError(problems)
    return cfg


def _name_problems(cfg: RunConfig, registry: Registry, sources: dict[str, str], file: str) -> list[str]:
    """Check that every plugin name the config uses is registered exactly once."""
    refs: list[tuple[str, str, str]] = []
    for group in ("datasets", "eval_datasets"):
        for i, ds in enumerate(getattr(cfg, group)):
            refs.append((f"{group}.{i}.format", "dataset_format", ds.format))
    if cfg.model is not None:
        refs += [(f"model.patches.{i}", "model_patch", p) for i, p in enumerate(cfg.model.patches)]
    out = []
    for key, kind, name in refs:
        try:
            registry.entry(kind, name)
        except OAError as e:
            out.append(f"{_origin_file(key, sources, file)}: {key}: {e}")
    return out


def load_config(path: str | Path, overrides: list[str] | None = None, registry: Registry | None = None) -> LoadedConfig:
    """Read, merge, override and validate a run config."""
    path = Path(path)
    data, sources = load_layers(path)
    data, sources = apply_overrides(data, sources, list(overrides or []))
    cfg = validate_config(data, sources, str(path), registry)
    for key in _flatten(cfg.model_dump(mode="json")):
        if not any(_covers(key, k) for k in sources):
            sources[key] = DEFAULT
    return LoadedConfig(cfg, path, dict(sorted(sources.items())))


# ---------------------------------------------------------------- effective config

SECRET_KEY = re.compile(r"(^|_)(token|secret|password|passwd|api_?key|access_?key|private_?key|credentials?)$", re.I)
NOT_SECRET_KEY = re.compile(r"(pad|eos|bos|unk|sep|cls|mask|eot|turn|special|chat)_token$", re.I)
SECRET_VALUE = re.compile(r"^(hf_|sk-|ghp_|xox[bp]-)[A-Za-z0-9_\-]{8,}$")
REDACTED = "***"


def redact(value: Any, key: str = "") -> Any:
    """Replace secret-looking values (by key name or token shape) with ``***``."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value is not None and not isinstance(value, bool) and SECRET_KEY.search(key) and not NOT_SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str) and SECRET_VALUE.match(value):
        return REDACTED
    return value


def write_effective_config(loaded: LoadedConfig, out_dir: str | Path) -> Path:
    """Write ``effective_config.yaml`` (values + where each came from) into ``out_dir`` atomically."""
    doc = {"config_file": str(loaded.path), "config": loaded.effective(), "sources": loaded.sources}
    text = "# The effective config of this run. `sources`: where each value came from\n"
    text += "# (a file, --set, or default). Secrets are redacted.\n"
    text += yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return atomic_write_text(Path(out_dir) / "effective_config.yaml", text)
