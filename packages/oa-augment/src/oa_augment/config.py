"""The config of ``oa augment CONFIG`` (YAML/JSON with ``include`` and ``--set``), also built from the flags of
``oa augment --augmenter NAME --input FILE --output OUT.jsonl ...``. Problems are reported all at once, one line
each, naming the file (or flag) and the key path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from oa_core.config import InputSpec, JsonlPath, RegistryRef
from oa_core.errors import ConfigError, OAError
from oa_core.generation import GenerationParams

Where = Literal["prompt", "response", "all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Generation(GenerationParams):
    """Sampling of every generator call (an augmenter may change some per call, e.g. ``n``)."""

    @field_validator("seed")
    @classmethod
    def _no_seed(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("every record gets its own seed, derived from the top-level `seed`; set that instead")
        return value


class FilterSettings(_Strict):
    """Per-record filters, applied when the output is written (changing them re-filters without regenerating)."""

    min_chars: int | None = Field(None, ge=0, description="remove records whose `length_of` text is shorter")
    max_chars: int | None = Field(None, ge=1, description="remove records whose `length_of` text is longer")
    length_of: Where = Field("response", description="the text the length bounds measure: prompt, response or all")
    drop_patterns: list[str] = Field(default_factory=list, description="regular expressions: remove records whose "
                                     "`patterns_on` text matches any")
    keep_patterns: list[str] = Field(default_factory=list, description="regular expressions: remove records whose "
                                     "`patterns_on` text misses any")
    patterns_on: Where = Field("all", description="the text the patterns are searched in")
    refusals: bool = Field(True, description="remove records whose response is a refusal (built-in phrases, e.g. "
                           "'as an AI language model', 'I'm sorry, but I can't')")
    refusal_patterns: list[str] = Field(default_factory=list, description="more refusal phrases (regular "
                                        "expressions, case-insensitive)")

    @field_validator("drop_patterns", "keep_patterns", "refusal_patterns")
    @classmethod
    def _regex(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"'{pattern}' is not a regular expression ({e})") from None
        return value


class DedupSettings(_Strict):
    """Duplicate removal over the whole output, in input order (the first of duplicates stays)."""

    exact: bool = Field(True, description="remove records whose `compare` text equals an earlier one's (case and "
                        "spacing ignored)")
    near: bool = Field(True, description="remove near duplicates: MinHash-LSH (datasketch) estimate of the "
                       "Jaccard similarity of character n-grams at least `threshold`")
    threshold: float = Field(0.85, gt=0, le=1, description="Jaccard similarity above which records are near duplicates")
    ngram: int = Field(5, ge=1, description="characters per shingle")
    num_perm: int = Field(128, ge=16, description="MinHash permutations (more: a finer estimate, slower)")
    compare: Where = Field("all", description="the text compared: prompt, response or all")
    against_input: bool = Field(False, description="also remove records that duplicate an input record (e.g. "
                                "generated instructions copying a seed task)")


class RewardSettings(_Strict):
    """What scores completions for augmenters that rank them (best_of_n): a reward function or a reward model."""

    function: Annotated[str, RegistryRef("reward_function")] | None = Field(
        None, description="a registered reward function (oa plugins list --kind reward_function)")
    options: dict[str, Any] = Field(default_factory=dict, description="the reward function's options")
    model: str | None = Field(None, description="a reward model folder (scored with oa-infer; needs torch)")
    batch_size: int = Field(8, ge=1, description="sequences a reward model scores together")
    device: str = Field("auto", description="where a reward model runs: auto, cpu, cuda, cuda:1 ...")

    @model_validator(mode="after")
    def _one(self) -> RewardSettings:
        if (self.function is None) == (self.model is None):
            raise ValueError("give exactly one of 'function' and 'model'")
        return self


class CostSettings(_Strict):
    """Prices for the cost estimate of the progress bar and the summary."""

    prompt_per_million: float = Field(0.0, ge=0, description="price of a million prompt tokens")
    completion_per_million: float = Field(0.0, ge=0, description="price of a million generated tokens")
    currency: str = Field("USD", description="the currency the prices are in (shown with the estimate)")


class AugmentConfig(_Strict):
    """What ``oa augment`` runs: an augmenter over the records of `input`, written to `output`."""

    augmenter: Annotated[str, RegistryRef("augmenter")] = Field(
        description="a registered augmenter (oa plugins list --kind augmenter)")
    input: InputSpec = Field(description="the records to augment")
    output: JsonlPath = Field(description="output .jsonl of native oa.* records (written whole when the run ends)")
    options: dict[str, Any] = Field(default_factory=dict, description="the augmenter's options")
    template: str | None = Field(None, description="prompt template replacing the augmenter's (jinja)")
    template_file: str | None = Field(None, description="a file with the prompt template (relative to the config)")
    generator: Annotated[str, RegistryRef("generator")] | None = Field(
        None, description="a registered generator: openai (an HTTP endpoint), hf, vllm (oa plugins list --kind "
        "generator); not needed by augmenters that generate nothing")
    engine: dict[str, Any] = Field(
        default_factory=dict, description="the generator's settings (openai: model, base_url, api_key_env, timeout, "
        "max_retries, requests_per_minute ...; hf: model, adapter, batch_size, device ...)")
    generation: Generation = Field(default_factory=Generation, description="sampling of every generator call")
    seed: int = Field(0, description="every record's seed is derived from it, the augmenter's name and the record's id")
    concurrency: int = Field(8, ge=1, description="records augmented at once (an engine that is not thread-safe, "
                             "e.g. hf, still runs one call at a time)")
    filters: FilterSettings = Field(default_factory=FilterSettings, description="per-record filters")
    dedup: DedupSettings = Field(default_factory=DedupSettings, description="duplicate removal")
    reward: RewardSettings | None = Field(None, description="what scores completions (best_of_n)")
    cost: CostSettings | None = Field(None, description="token prices for a cost estimate")
    max_failures: int = Field(20, ge=0, description="stop the run once this many records failed in it (an "
                              "endpoint that is down); 0: never stop")
    work_dir: str | None = Field(None, description="folder of the journal, settings and summary (default: the "
                                 "output's name with .augment instead of .jsonl, beside it)")

    @model_validator(mode="after")
    def _one_template(self) -> AugmentConfig:
        if self.template is not None and self.template_file is not None:
            raise ValueError("give at most one of 'template' and 'template_file'")
        return self

    @property
    def journal_dir(self) -> Path:
        out = Path(self.output)
        return Path(self.work_dir) if self.work_dir else out.with_name(out.name.removesuffix(".jsonl") + ".augment")


def _flag_where(key: str, sources: dict[str, str], file: str) -> str:
    from oa_core.config.validate import origin_file

    return origin_file(key, sources, file)


def validate(data: dict[str, Any], sources: dict[str, str], file: str, registry: Any = None) -> AugmentConfig:
    """``data`` as an :class:`AugmentConfig` whose augmenter options, engine settings, reward and template are
    valid too; else a :class:`ConfigError` with every problem as ``file: key: message``."""
    from oa_core.config.validate import _non_finite, _schema_problems, name_problems
    from oa_core.plugins import get_registry

    registry = registry or get_registry()
    problems = [f"{_flag_where(k, sources, file)}: {k}: must be a finite number (got {v})" for k, v in _non_finite(data)]
    config = None
    try:
        config = AugmentConfig.model_validate(data)
    except ValidationError as e:
        problems += _schema_problems(e, AugmentConfig, sources, file)
        raw = {k: v for k, v in data.items() if k in AugmentConfig.model_fields}
        problems += _raw_name_problems(raw, registry, sources, file, skip={p.split(": ")[1] for p in problems})
    if config is not None:
        keyed = list(name_problems(config, registry)) + _plugin_problems(config, registry, file)
        problems += [f"{_flag_where(k, sources, file)}: {k}: {m}" for k, m in keyed]
    if problems:
        raise ConfigError(problems)
    return config


def _raw_name_problems(raw: dict, registry: Any, sources: dict, file: str, skip: set[str]) -> list[str]:
    """Unknown plugin names of a config that failed schema validation (so that they are reported at once too)."""
    out = []
    source = raw.get("input") if isinstance(raw.get("input"), dict) else {}
    reward = raw.get("reward") if isinstance(raw.get("reward"), dict) else {}
    for key, kind, name in (("augmenter", "augmenter", raw.get("augmenter")), ("generator", "generator", raw.get("generator")),
                            ("input.format", "dataset_format", source.get("format")),
                            ("reward.function", "reward_function", reward.get("function"))):
        if isinstance(name, str) and key not in skip:
            try:
                registry.entry(kind, name)
            except OAError as e:
                out.append(f"{_flag_where(key, sources, file)}: {key}: {e.message}")
    return out


def _plugin_problems(config: AugmentConfig, registry: Any, file: str) -> list[tuple[str, str]]:
    """Problems only the registered plugins can see: the augmenter's options and template, the engine settings, a
    missing generator or reward, the reward function's options."""
    from oa_augment.templates import template_problem
    from oa_core.config.validate import _schema_problems

    out: list[tuple[str, str]] = []
    try:
        augmenter = registry.get("augmenter", config.augmenter)
    except OAError:
        return out  # reported by name_problems
    options: Any = config.options
    if augmenter.options is not None:
        try:
            options = augmenter.options.model_validate(config.options)
        except ValidationError as e:
            out += _nested(_schema_problems(e, augmenter.options, {}, "-"), "options")
            options = None
    if options is not None:
        if _needs(augmenter.needs_generator, options) and config.generator is None:
            out.append(("generator", f"augmenter '{config.augmenter}' generates text: name a generator (openai, hf, "
                                     "vllm) and its engine settings"))
        if _needs(augmenter.needs_reward, options) and config.reward is None:
            out.append(("reward", f"augmenter '{config.augmenter}' ranks completions: give reward.function or "
                                  "reward.model"))
    text = template_text(config, Path(file).parent if file not in ("command line", "-") else Path("."))
    if isinstance(text, OAError):
        out.append(("template_file", text.message))
    elif text is not None and (problem := template_problem(text, augmenter.variables)):
        out.append(("template_file" if config.template_file else "template", problem))
    if config.generator is not None:
        try:
            gen = registry.get("generator", config.generator)
        except OAError:
            gen = None
        if gen is not None and gen.options is not None:
            try:
                gen.options.model_validate(config.engine)
            except ValidationError as e:
                out += _nested(_schema_problems(e, gen.options, {}, "-"), "engine")
    if config.reward is not None and config.reward.function is not None:
        try:
            fn = registry.get("reward_function", config.reward.function)
        except OAError:
            fn = None
        if fn is not None and fn.options is not None:
            try:
                fn.options.model_validate(config.reward.options)
            except ValidationError as e:
                out += _nested(_schema_problems(e, fn.options, {}, "-"), "reward.options")
    return out


def _nested(lines: list[str], prefix: str) -> list[tuple[str, str]]:
    """``- key: message`` lines of a nested model's problems as ``(prefix.key, message)``."""
    out = []
    for line in lines:
        _, key, msg = line.split(": ", 2)
        out.append((f"{prefix}.{key}" if key and key != "<top>" else prefix, msg))
    return out


def _needs(flag: Any, options: Any) -> bool:
    return bool(flag(options)) if callable(flag) else bool(flag)


def template_text(config: AugmentConfig, base: Path) -> str | OAError | None:
    """The user's template text (inline, or the file's), None when the augmenter's own is used."""
    if config.template is not None:
        return config.template
    if config.template_file is None:
        return None
    path = Path(config.template_file)
    path = path if path.is_absolute() or path.exists() else base / path
    if not path.is_file():
        return OAError(f"'{config.template_file}' not found (looked at {path})")
    return path.read_text(encoding="utf-8")


def load_augment_config(path: str | Path, overrides: list[str] | None = None, registry: Any = None) -> AugmentConfig:
    """Read, merge (``include``), override (``--set``) and validate an ``oa augment`` config."""
    from oa_core.config import apply_overrides, load_layers

    path = Path(path)
    data, sources = load_layers(path)
    data, sources = apply_overrides(data, sources, list(overrides or []))
    config = validate(data, sources, str(path), registry)
    if config.template_file is not None:  # relative to the config, as include is
        text = template_text(config, path.parent)
        config = config.model_copy(update={"template": text, "template_file": None}) if isinstance(text, str) else config
    return config
