"""The `data:` section of run configs (registered by oa-data as a config section)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from oa_core.config import RegistryRef, TruncationRule
from oa_data.templates import role_tag_problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoseSettings(_Strict):
    """PoSE position ids: random skips, only before the chosen split tokens (Axolotl's rule)."""

    max_context_len: int = Field(
        ge=8, description="the context length the positions span (tokens); a longer sample is an error")
    split_on_token_ids: list[int] = Field(
        default_factory=list, description="token ids: skips only right before these (empty: between num_chunks chunks)")
    num_chunks: int = Field(
        2, ge=2, description="without split_on_token_ids: the sample is cut into this many equal chunks, with a "
        "random skip before each but the first")


class DataSettings(_Strict):
    """How records become token sequences: template, loss mask, truncation, packing, mixing, cache."""

    # templates (chat_template: a built-in name or "tokenizer"; chat_template_jinja: inline text or a file)
    chat_template: Annotated[str, RegistryRef("chat_template", also=("tokenizer",))] | None = Field(
        None, description="a registered template (chatml, llama-3, oasst, llama-2, mistral, gemma, phi-3, qwen2.5, zephyr, "
        "alpaca; oa plugins list --kind chat_template) or 'tokenizer' (the tokenizer's own); default: the tokenizer's own")
    chat_template_jinja: str | None = Field(None, description="jinja template text or path to a .jinja file")
    role_tag_mapping: dict[str, str] | None = Field(
        None, description="turbo-style: role (system, user, assistant or bot, tool) -> tag rendered for {role}")
    prefix_template: str | None = Field(None, description="turbo-style, with {role}, e.g. '<|im_start|>{role}\\n'")
    suffix_template: str | None = Field(None, description="turbo-style, e.g. '<|im_end|>\\n'")
    end_of_turn: str | None = Field(None, description="string closing a turn (supervised); default: inferred")
    add_special_tokens: list[str] = Field(default_factory=list, description="new tokens added to the tokenizer")

    # loss masks
    train_on_inputs: bool = Field(False, description="supervise every token, prompts included")
    only_answer_loss: bool = Field(False, description="supervise only the last assistant answer")
    mask_cross_check: float = Field(
        0.05, ge=0, le=1,
        description="fraction of samples (besides the first 64 of a split) whose loss mask is cross-checked by "
        "prefix rendering during training; 1.0 = every sample. `oa data validate` always checks every sample",
    )

    # lengths and truncation (datasets can override truncation/min_length/max_length)
    max_length: int = Field(
        2048, ge=8, description="longest sample (tokens), longer ones are truncated by the truncation rule; with "
        "packing also the length of a packed row. Datasets can set their own")
    min_length: int = Field(
        1, ge=1, description="samples (and chunks) shorter than this (tokens) after truncation are dropped. "
        "Datasets can set their own")
    max_drop_fraction: float = Field(
        0.05, ge=0, le=1, description="stop the run when a dataset loses more than this fraction of its records to "
        "unreadable rows or to length rules (sampling is not a loss); every loss is counted in the data summary")
    truncation: TruncationRule | None = Field(
        None, description="what to do with samples over max_length (datasets can override it): keep_end (drop the "
        "earliest whole turns), keep_start (keep the first whole messages, ending on an answer), drop, random_cut "
        "(end every conversation after a random answer), random_window (a random max_length token window), chunk "
        "(split plain text into max_length pieces); default: keep_end for conversations, chunk for plain text")

    # packing and positions
    packing: bool = Field(
        False, description="pack samples best-fit-decreasing into rows of max_length tokens, position ids restarting "
        "per sample so attention never crosses samples")
    pose: PoseSettings | None = Field(
        None, description="PoSE position ids, to train a longer context on short samples (null: off)")

    # mixing and cache
    per_epoch_resample: bool = Field(False, description="OA-style: redraw sample_rate fractions every epoch")
    cache_dir: str = Field(".oa-cache", description="folder of the tokenized-data cache (relative: to the working "
                           "directory)")
    num_proc: int = Field(
        1, ge=1, description="worker processes that parse and validate the rows of a source of over 1000 rows")

    @model_validator(mode="after")
    def _one_mask_policy(self) -> DataSettings:
        if self.train_on_inputs and self.only_answer_loss:
            raise ValueError("train_on_inputs and only_answer_loss exclude each other")
        if self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) exceeds max_length ({self.max_length})")
        return self


TEXT_ONLY_RULES = {"chunk": "splits plain text into pieces; conversations are cut by whole messages "
                   "(keep_end, keep_start, random_cut, drop)"}
CHAT_ONLY_RULES = {"random_cut": "ends a conversation after a random answer; plain text has none "
                   "(chunk, keep_start, keep_end, random_window, drop)"}


def default_truncation(text: bool) -> TruncationRule:
    """The rule when neither the dataset nor ``data:`` sets one: chunk plain text, keep the end of chats."""
    return "chunk" if text else "keep_end"


def truncation_problem(rule: str, text: bool) -> str | None:
    """Why ``rule`` cannot truncate plain text (``text``) or conversations; ``None`` when it can."""
    why = (CHAT_ONLY_RULES if text else TEXT_ONLY_RULES).get(rule)
    return None if why is None else f"truncation '{rule}' {why}"


def check_data_config(cfg) -> list[tuple[str, str]]:
    """Rules between ``data:`` and the dataset entries (the ``check_config`` hook of oa-data)."""
    settings = cfg.section("data", DataSettings)
    problems = _role_tag_problems(settings) + _path_problems(cfg, settings)
    for group in ("datasets", "eval_datasets"):
        for i, spec in enumerate(getattr(cfg, group)):
            key = f"{group}.{i}"
            problems += _rule_fits_format(spec, settings, key)
            if settings.packing and spec.max_length and spec.max_length > settings.max_length:
                problems.append((f"{key}.max_length", f"{spec.max_length} exceeds data.max_length {settings.max_length}, "
                                 "the length of a packed row (lower it, or raise data.max_length)"))
            low, high = spec.min_length or settings.min_length, spec.max_length or settings.max_length
            if low > high:
                problems.append((f"{key}.min_length", f"{low} exceeds this dataset's max_length {high}"))
    return problems


def _rule_fits_format(spec, settings: DataSettings, key: str) -> list[tuple[str, str]]:
    """A truncation rule that does not apply to the records of the dataset's format."""
    from oa_core.errors import OAError
    from oa_core.plugins import get_registry
    from oa_core.schema import Conversation, PromptCompletion, Text

    rule = spec.truncation or settings.truncation
    try:
        record_type = get_registry().get("dataset_format", spec.format).record_type
    except OAError:  # an unknown format is reported by the name check
        return []
    if rule is None or not issubclass(record_type, (Text, Conversation, PromptCompletion)):
        return []
    problem = truncation_problem(rule, issubclass(record_type, Text))
    if problem is None:
        return []
    where = f"{key}.truncation" if spec.truncation else "data.truncation"
    return [(where, f"{problem}; format '{spec.format}' of {key} makes {record_type.__name__} records")]


def _role_tag_problems(settings: DataSettings) -> list[tuple[str, str]]:
    if settings.role_tag_mapping and settings.prefix_template is None:
        return [("data.role_tag_mapping", "only turbo-style templates use it (set data.prefix_template and "
                 "data.suffix_template), so it would be ignored")]
    return [(f"data.role_tag_mapping.{key}", message) for key, message in role_tag_problems(settings.role_tag_mapping)]


def _path_problems(cfg, settings: DataSettings) -> list[tuple[str, str]]:
    """Local data files and tokenizer folders that are not there, and chat data for a tokenizer without a chat
    template when none is configured (read from files only: nothing is loaded)."""
    from pathlib import Path

    from oa_core.errors import OAError
    from oa_data.hub import looks_local
    from oa_data.loading import data_files
    from oa_data.tokenizer import any_chat

    problems = []
    for group in ("datasets", "eval_datasets"):
        for i, spec in enumerate(getattr(cfg, group)):
            if looks_local(spec.path) or Path(spec.path).suffix:
                try:
                    data_files(spec.path)
                except OAError as e:
                    problems.append((f"{group}.{i}.path", f"{e.message.removeprefix(spec.path + ': ')} ('{spec.path}', "
                                     "relative to the working directory)"))
    key, tok = ("tokenizer.path", cfg.tokenizer.path) if cfg.tokenizer.path else ("model.path", cfg.model.path if cfg.model else None)
    folder = Path(tok).expanduser() if tok else None
    if folder is None or not folder.is_dir():
        if tok and looks_local(tok) and cfg.tokenizer.path:  # model.path is checked with the model
            problems.append((key, f"local tokenizer folder '{tok}' not found"))
        return problems
    uses_tokenizer_template = not (settings.chat_template_jinja or settings.prefix_template) and settings.chat_template in (None, "tokenizer")
    try:
        chat = any_chat([*cfg.datasets, *cfg.eval_datasets])
    except OAError:  # an unknown format is reported by the name check
        chat = False
    if chat and uses_tokenizer_template and not _has_chat_template(folder):
        problems.append(("data.chat_template", f"the tokenizer in '{tok}' has no chat template; name one (chatml, llama-3, "
                         "... : oa plugins list --kind chat_template) or give data.chat_template_jinja"))
    return problems


def _has_chat_template(folder) -> bool:
    import json

    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False
