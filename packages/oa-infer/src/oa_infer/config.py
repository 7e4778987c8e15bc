"""The config of ``oa infer CONFIG`` (YAML/JSON with ``include`` and ``--set``), also built from the flags of
``oa infer --model ... --input ... --output ...``. Problems are reported all at once, one line each, naming the
file (or flag) and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oa_core.config import InputSpec, JsonlPath, RegistryRef
from oa_core.errors import ConfigError
from oa_core.generation import GenerationParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationSpec(GenerationParams):
    """One generation setting; several settings write one output file each."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="names the setting's output file (out.<name>.jsonl); needed with several")


class InferConfig(_Strict):
    """What `oa infer` runs: a model over the records of `input`, written to `output`."""

    task: Literal["generate", "score"] = Field(
        "generate", description="generate: completions; score: reward-model/classifier scores of the records")
    generator: Annotated[str, RegistryRef("generator")] = Field(
        "hf", description="a registered generator (oa plugins list --kind generator); scoring runs on hf")
    engine: dict[str, Any] = Field(
        description="the generator's settings: model, adapter, tokenizer, dtype, trust_remote_code and its own "
        "options (hf: batch_size, device, attn_implementation, use_cache, continuous_batching)")
    input: InputSpec = Field(description="the records to run on")
    output: JsonlPath = Field(description="output jsonl; resumed when it exists (finished records are skipped)")
    generation: list[GenerationSpec] = Field(
        default_factory=lambda: [GenerationSpec()],
        description="generation settings (one mapping or a list; each list entry writes its own file)")
    chunk_size: int = Field(64, ge=1, description="records per output write (a killed run redoes at most these)")

    @field_validator("generation", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("generation")
    @classmethod
    def _names(cls, value: list[GenerationSpec]) -> list[GenerationSpec]:
        names = [g.name for g in value]
        if len(value) > 1 and None in names:
            raise ValueError("with several settings every one needs a `name` (it names its output file)")
        if len(set(names)) < len(names):
            raise ValueError(f"names must differ (got {', '.join(map(str, names))})")
        return value

    def outputs(self) -> list[tuple[GenerationSpec, Path]]:
        """Each generation setting with its output file (``output``, or ``<stem>.<name>.jsonl`` beside it)."""
        out = Path(self.output)
        if self.task == "score" or len(self.generation) == 1:
            return [(self.generation[0], out)]
        return [(g, out.with_name(f"{out.name.removesuffix('.jsonl')}.{g.name}.jsonl")) for g in self.generation]


def engine_settings(config: InferConfig, registry: Any = None):
    """``config.engine`` validated by the generator's settings model (the ``hf`` one for scoring)."""
    from oa_core.plugins import get_registry

    registry = registry or get_registry()
    generator = "hf" if config.task == "score" else config.generator
    options = registry.get("generator", generator).options
    return options.model_validate(config.engine) if options is not None else config.engine


def validate(data: dict[str, Any], sources: dict[str, str], file: str, registry: Any = None,
             flags: dict[str, str] | None = None) -> InferConfig:
    """``data`` as an :class:`InferConfig` with valid engine settings; else a :class:`ConfigError` with every
    problem as ``file: key: message`` (``flags`` maps keys to the command-line flags that set them)."""
    from oa_core.config.validate import origin_file
    from oa_core.plugins import get_registry

    registry = registry or get_registry()

    def where(key: str) -> str:
        if not key:
            return file
        if flags is not None:
            if key in flags:
                return flags[key]
            prefix = next((k for k in flags if key.startswith(k + ".")), None)
            return f"{flags[prefix]} {key[len(prefix) + 1:]}" if prefix else f"{file}: {key}"
        return f"{origin_file(key, sources, file)}: {key}"

    problems: list[tuple[str, str]] = []
    config = None
    try:
        config = InferConfig.model_validate(data)
    except ValidationError as e:
        problems += _problems(e)
    task = data.get("task", "generate")
    generator = "hf" if task == "score" else data.get("generator", "hf")
    source = data.get("input") if isinstance(data.get("input"), dict) else {}
    for key, kind, name in (("generator", "generator", data.get("generator", "hf")),
                            ("input.format", "dataset_format", source.get("format"))):
        if isinstance(name, str) and (problem := _name_problem(registry, kind, name)):
            problems.append((key, problem))
    if task == "score" and data.get("generator", "hf") != "hf":
        problems.append(("generator", f"scoring runs on the hf backend, not '{data['generator']}'"))
    if isinstance(data.get("engine"), dict) and isinstance(generator, str) and not _name_problem(
            registry, "generator", generator):
        options = registry.get("generator", generator).options
        try:
            if options is not None:
                options.model_validate(data["engine"])
        except ValidationError as e:
            problems += [(f"engine.{k}" if k else "engine", m) for k, m in _problems(e, options)]
    if problems:
        raise ConfigError([f"{where(k)}: {m}" for k, m in problems])
    return config


def _name_problem(registry: Any, kind: str, name: str) -> str | None:
    from oa_core.errors import OAError

    try:
        registry.entry(kind, name)
    except OAError as e:
        return e.message + (f" ({e.hint})" if e.hint else "")
    return None


def load_infer_config(path: str | Path, overrides: list[str] | None = None, registry: Any = None) -> InferConfig:
    """Read, merge (``include``), override (``--set``) and validate an ``oa infer`` config."""
    from oa_core.config import apply_overrides, load_layers

    path = Path(path)
    data, sources = load_layers(path)
    data, sources = apply_overrides(data, sources, list(overrides or []))
    return validate(data, sources, str(path), registry)


def _problems(err: ValidationError, model: type[BaseModel] = InferConfig) -> list[tuple[str, str]]:
    import difflib

    out = []
    for e in err.errors():
        loc = [p for p in e["loc"] if not str(p).startswith("function-")]
        key = ".".join(str(p) for p in loc)  # "": a check of the whole model
        if e["type"] == "extra_forbidden":
            known = list(_model_at(model, loc[:-1]).model_fields) if _model_at(model, loc[:-1]) else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] not in ("value_error", "assertion_error"):
                msg += f" (got {e.get('input')!r:.60})"
        out.append((key, msg))
    return out


def _model_at(model: type[BaseModel], loc: list) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int) or part == "list[GenerationSpec]":
            continue
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        args = [annotation, *getattr(annotation, "__args__", ())]
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return model
