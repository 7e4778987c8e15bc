"""The config of ``oa eval CONFIG`` (YAML/JSON with ``include`` and ``--set``), also built from the flags of
``oa eval --model PATH --input FILE --metrics bleu,rouge --output-dir DIR``. Problems are reported all at once,
one line each, naming the file (or flag) and the key, as ``oa infer`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from oa_core.errors import ConfigError
from oa_core.generation import GenerationParams, GeneratorSettings
from oa_infer.config import InputSpec, _name_problem, _problems, _Strict
from oa_infer.metrics import LOWER_IS_BETTER, METRICS, metric_keys

Metric = Literal["bleu", "rouge", "exact_match", "accuracy", "pass_at_k", "reward", "perplexity"]
assert set(Metric.__args__) == set(METRICS)


class PassAtK(_Strict):
    """Sampled answers for pass@k: ``n`` per prompt, judged right or wrong one by one."""

    n: int = Field(10, ge=1, description="answers sampled per prompt")
    k: list[int] = Field(default_factory=lambda: [1], min_length=1,
                         description="the k of each pass@k reported (each from 1 to n)")
    temperature: float = Field(0.8, gt=0, description="sampling temperature of these answers")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass of these answers")
    correct: Literal["accuracy", "exact_match"] = Field(
        "accuracy", description="what makes an answer right: accuracy (its final number is the reference's) or "
        "exact_match (equal after SQuAD normalisation)")

    @model_validator(mode="after")
    def _k_within_n(self) -> PassAtK:
        bad = [k for k in self.k if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"k must be from 1 to n={self.n} (got {', '.join(map(str, bad))})")
        return self


class EvalDataset(InputSpec):
    """A dataset to evaluate on (any registered format, read as training reads it) and its metrics."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="names the dataset in reports and files (default: the file's stem)")
    metrics: list[Metric] = Field(
        min_length=1, description="bleu, rouge, exact_match, accuracy (final number), pass_at_k, reward "
        "(needs `reward`), perplexity (of the reference answers)")
    generation: GenerationParams | None = Field(
        None, description="generation settings for this dataset's answers (default: the top-level `generation`)")
    pass_at_k: PassAtK | None = Field(None, description="sampling for pass_at_k (default: n 10, k [1], "
                                      "temperature 0.8)")

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        twice = sorted({m for m in value if value.count(m) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}")
        return value

    @property
    def label(self) -> str:
        """The dataset's name in reports: ``name``, else the stem of its file."""
        if self.name:
            return self.name
        stem = Path(self.path).name
        for suffix in (".gz", ".jsonl", ".json", ".parquet", ".csv", ".txt"):
            stem = stem.removesuffix(suffix)
        return stem or "data"

    def keys(self) -> list[str]:
        """The metric keys this dataset reports (``rouge``: rouge1, rouge2, rougeL; ``pass_at_k``: pass@K)."""
        ks = (self.pass_at_k or PassAtK()).k
        return [key for m in self.metrics for key in metric_keys(m, ks)]


class RewardModel(GeneratorSettings):
    """The reward model that scores the answers (metric ``reward``): a model saved with a one-output score head,
    or a SEQ_CLS adapter on its base."""

    batch_size: int = Field(8, ge=1, description="sequences scored together")


class Select(_Strict):
    """How the best checkpoint is chosen."""

    metric: str = Field(description="DATASET/METRIC, e.g. gsm8k/accuracy (with one dataset METRIC alone)")
    mode: Literal["max", "min"] | None = Field(
        None, description="max: the highest value wins, min: the lowest (default: min for perplexity, else max)")


class EvalConfig(_Strict):
    """What `oa eval` runs: every checkpoint of `models` on every dataset of `datasets`."""

    models: list[str] = Field(
        min_length=1, description="model folders, adapter folders (on their base) or runs' output_dir (their "
        "checkpoints/checkpoint-* in step order, then model), or hub ids")
    base: str | None = Field(None, description="base model of the adapters (default: each adapter's "
                             "base_model_name_or_path)")
    engine: dict[str, Any] = Field(
        default_factory=dict, description="hf generator options: dtype, batch_size, device, attn_implementation, "
        "use_cache, continuous_batching, tokenizer, trust_remote_code")
    datasets: list[EvalDataset] = Field(min_length=1, description="datasets with their metrics")
    generation: GenerationParams = Field(
        default_factory=GenerationParams, description="generation settings of the answers (default: greedy, "
        "max_new_tokens 256)")
    reward: RewardModel | None = Field(None, description="the reward model of the `reward` metric")
    select: Select | None = Field(None, description="choose the best checkpoint by a metric (written to the report)")
    seed: int = Field(0, description="seed of sampled answers where their generation settings set none")
    output_dir: str = Field(description="folder of the reports and generations (a checkpoint already evaluated "
                            "with the same settings is not evaluated again)")
    chunk_size: int = Field(64, ge=1, description="records per durable write of the generations (a killed run "
                            "redoes at most these)")

    def metric_names(self) -> list[str]:
        """Every ``DATASET/METRIC`` key the reports have."""
        return [f"{d.label}/{key}" for d in self.datasets for key in d.keys()]

    def selected(self) -> tuple[str, str] | None:
        """``(DATASET/METRIC, mode)`` of ``select``, the mode filled in."""
        if self.select is None:
            return None
        metric = self.select.metric
        if "/" not in metric and len(self.datasets) == 1:
            metric = f"{self.datasets[0].label}/{metric}"
        mode = self.select.mode or ("min" if metric.rpartition("/")[2] in LOWER_IS_BETTER else "max")
        return metric, mode


ENGINE_KEYS_SET_ELSEWHERE = {"model": "models", "adapter": "models"}


def engine_settings(config: EvalConfig, model: str, adapter: str | None = None):
    """The ``hf`` generator's settings for one checkpoint: ``config.engine`` plus the model and adapter."""
    from oa_infer.engines.hf import HFSettings

    return HFSettings.model_validate({**config.engine, "model": model, "adapter": adapter})


def validate(data: dict[str, Any], sources: dict[str, str], file: str, registry: Any = None,
             flags: dict[str, str] | None = None) -> EvalConfig:
    """``data`` as an :class:`EvalConfig`; else a :class:`ConfigError` with every problem as
    ``file: key: message`` (``flags`` maps keys to the command-line flags that set them)."""
    from oa_core.config.validate import origin_file
    from oa_core.plugins import get_registry
    from oa_infer.engines.hf import HFSettings

    registry = registry or get_registry()

    def where(key: str) -> str:
        if not key:
            return file
        if flags is None:
            return f"{origin_file(key, sources, file)}: {key}"
        hit = next((k for k in sorted(flags, key=len, reverse=True) if key == k or key.startswith(k + ".")), None)
        if hit is None:
            return f"{file}: {key}"
        return flags[hit] if key == hit else f"{flags[hit]} {key[len(hit) + 1:]}"

    problems: list[tuple[str, str]] = []
    config = None
    try:
        config = EvalConfig.model_validate(data)
    except ValidationError as e:
        problems += _problems(e, EvalConfig)
    datasets = data.get("datasets") if isinstance(data.get("datasets"), list) else []
    for i, spec in enumerate(datasets):
        name = spec.get("format") if isinstance(spec, dict) else None
        if isinstance(name, str) and (problem := _name_problem(registry, "dataset_format", name)):
            problems.append((f"datasets.{i}.format", problem))
    engine = data.get("engine")
    if isinstance(engine, dict):
        for key, instead in ENGINE_KEYS_SET_ELSEWHERE.items():
            if key in engine:
                problems.append((f"engine.{key}", f"set by `{instead}` (one entry per model or adapter)"))
        try:
            HFSettings.model_validate({**engine, "model": "-", "adapter": None})
        except ValidationError as e:
            problems += [(f"engine.{k}" if k else "engine", m) for k, m in _problems(e, HFSettings)]
    if config is not None:
        problems += _cross_problems(config)
    if problems:
        seen, lines = set(), []
        for k, m in problems:
            line = f"{where(k)}: {m}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
        raise ConfigError(lines)
    return config


def _cross_problems(config: EvalConfig) -> list[tuple[str, str]]:
    """What the keys of one section cannot tell alone: names, the reward model, pass@k, the selected metric."""
    import difflib

    problems = []
    names: dict[str, int] = {}
    for i, d in enumerate(config.datasets):
        if d.label in names:
            problems.append((f"datasets.{i}.name", f"'{d.label}' is also the name of datasets.{names[d.label]}; "
                             "give each dataset its own `name`"))
        names.setdefault(d.label, i)
        if "reward" in d.metrics and config.reward is None:
            problems.append((f"datasets.{i}.metrics", "reward needs a reward model: set `reward: {model: PATH}`"))
        if d.pass_at_k is not None and "pass_at_k" not in d.metrics:
            problems.append((f"datasets.{i}.pass_at_k", "set, but pass_at_k is not in this dataset's metrics"))
    if config.reward is not None and not any("reward" in d.metrics for d in config.datasets):
        problems.append(("reward", "set, but no dataset lists the reward metric"))
    selected = config.selected()
    if selected is not None:
        known = config.metric_names()
        if selected[0] not in known:
            close = difflib.get_close_matches(selected[0], known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (the reports have: {', '.join(known)})"
            problems.append(("select.metric", f"'{config.select.metric}' is not a metric of this evaluation{hint}"))
    return problems


def load_eval_config(path: str | Path, overrides: list[str] | None = None, registry: Any = None) -> EvalConfig:
    """Read, merge (``include``), override (``--set``) and validate an ``oa eval`` config."""
    from oa_core.config import apply_overrides, load_layers

    path = Path(path)
    data, sources = load_layers(path)
    data, sources = apply_overrides(data, sources, list(overrides or []))
    return validate(data, sources, str(path), registry)
