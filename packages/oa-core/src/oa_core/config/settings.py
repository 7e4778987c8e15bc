"""The method-independent sections of a run config (``model``, ``tokenizer``, ``datasets``) and
:class:`RunConfig`, which plugins extend with their own sections and the method's ``train:`` model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Section = TypeVar("Section", bound=BaseModel)

TruncationRule = Literal["keep_end", "keep_start", "drop", "random_cut", "random_window", "chunk"]
TRUNCATION_RULES = ("keep_end", "keep_start", "drop", "random_cut", "random_window", "chunk")


@dataclass(frozen=True)
class RegistryRef:
    """Field metadata: the value names a registered plugin entry of ``kind`` (or is one of ``also``).

    ``validate_config`` checks every such field of a config, wherever it is, with "did you mean"::

        format: Annotated[str, RegistryRef("dataset_format")]
    """

    kind: str
    also: tuple[str, ...] = ()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    """Which model to load and how."""

    path: str = Field(description="local folder or hub id")
    type: Literal["causal", "seq_cls"] = Field(
        "causal", description="causal: a causal LM (AutoModelForCausalLM); seq_cls: a sequence classifier "
        "(AutoModelForSequenceClassification)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weight dtype to load in (auto: as saved)")
    attn_implementation: str | None = Field(
        None, description="attention implementation for transformers: eager, sdpa, flash_attention_2, flex_attention; "
        "default: transformers' choice")
    trust_remote_code: bool = Field(False, description="run the model folder's own Python code (only for trusted sources)")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="more keyword arguments for from_pretrained")
    adapter_path: str | None = Field(None, description="a saved PEFT adapter to load onto the model and keep training")
    random_init: bool = Field(
        False, description="build the model from the folder's config.json with random weights (seeded by `seed`)"
    )
    patches: list[Annotated[str, RegistryRef("model_patch")]] | None = Field(
        None, description="model patches to apply, by name (oa plugins list --kind model_patch); [] for none. Not set: "
        "kernels.all on a GPU when oa-kernels is installed (each kernel self-tests and falls back), none on a CPU")


class TokenizerSettings(_Strict):
    """Which tokenizer to load (default: the model's)."""

    path: str | None = Field(None, description="defaults to model.path")
    use_fast: bool = Field(True, description="the Rust (fast) tokenizer when there is one")
    trust_remote_code: bool = Field(False, description="run the tokenizer folder's own Python code")


class DatasetSpec(_Strict):
    """One data source: where it is, which format reads it, how much of it goes into the mix."""

    path: str = Field(description="file, folder or hub dataset id")
    format: Annotated[str, RegistryRef("dataset_format")] = Field(
        description="a registered dataset format (oa plugins list --kind dataset_format)")
    split: str = Field("train", description="split of a hub dataset, or the key of a split-keyed JSON file")
    subset: str | None = Field(None, description="hub dataset configuration name")
    field_map: dict[str, str] = Field(default_factory=dict, description="canonical field -> column name")
    sample_rate: float | None = Field(None, gt=0, description="fraction of the source in the mix (>1 repeats)")
    num_samples: int | None = Field(None, gt=0, description="number of records of the source in the mix")
    options: dict[str, Any] = Field(default_factory=dict, description="format-specific options")
    truncation: TruncationRule | None = Field(
        None, description="per-dataset truncation rule (see data.truncation); default: data.truncation"
    )
    min_length: int | None = Field(None, ge=1, description="drop samples shorter than this (tokens)")
    max_length: int | None = Field(None, ge=1, description="per-dataset max tokens; default: data.max_length")

    @model_validator(mode="after")
    def _one_amount(self) -> DatasetSpec:
        if self.sample_rate is not None and self.num_samples is not None:
            raise ValueError("give at most one of 'sample_rate' and 'num_samples'")
        return self


def _jsonl(value: str) -> str:
    if not value.endswith(".jsonl"):
        raise ValueError(f"'{value}' must end in .jsonl")
    return value


JsonlPath = Annotated[str, AfterValidator(_jsonl)]  # an output file of JSON lines


class InputSpec(_Strict):
    """The records a command runs on (``oa infer``, ``oa eval``, ``oa augment``): any registered dataset format,
    read as training reads it."""

    path: str = Field(description="file, folder, glob or hub dataset id")
    format: Annotated[str, RegistryRef("dataset_format")] = Field(
        description="a registered dataset format (oa plugins list --kind dataset_format)")
    split: str = Field("train", description="split of a hub dataset, or the key of a split-keyed JSON file")
    subset: str | None = Field(None, description="hub dataset configuration name")
    field_map: dict[str, str] = Field(default_factory=dict, description="canonical field -> column name")
    options: dict[str, Any] = Field(default_factory=dict, description="format-specific options")
    limit: int | None = Field(None, ge=1, description="use only the first N records")


class RunConfig(_Strict):
    """The method-independent part of a run config; ``train`` is validated by the method's model and
    plugin sections (``data``, ``peft``, ``kernels`` ...) are added by :func:`oa_core.config.config_model`."""

    method: Annotated[str, RegistryRef("method")] = Field(description="a registered training method (sft, ...)")
    output_dir: str = Field("runs/default", description="where checkpoints, logs and the final model go")
    seed: int = Field(42, description="seeds data order, initialisation and sampling")
    model: ModelSettings | None = Field(None, description="the model to train (oa train needs it)")
    tokenizer: TokenizerSettings = Field(
        default_factory=TokenizerSettings, description="which tokenizer to load (default: the model's)")
    datasets: list[DatasetSpec] = Field(default_factory=list, description="training data sources (mixed)")
    eval_datasets: list[DatasetSpec] = Field(default_factory=list, description="held-out data sources")
    train: dict[str, Any] = Field(default_factory=dict, description="options of the method")

    def section(self, name: str, model: type[Section]) -> Section:
        """The plugin section ``name`` as a ``model`` instance (its defaults when the config has none, or when
        the plugin that registers it is not installed)."""
        value = getattr(self, name, None)
        if value is None:
            return model()
        if not isinstance(value, model):
            raise TypeError(f"config section '{name}' is a {type(value).__name__}, not a {model.__name__}")
        return value
