"""A run's tokenizer: loaded (local folder or hub id, torch-free) and prepared once, before the model is built."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oa_core.config import DatasetSpec, ModelSettings, RunConfig, TokenizerSettings
from oa_core.errors import OAError, warn
from oa_core.extensions import ChatTemplate
from oa_data.hub import is_offline, load_error, resolve_source


@dataclass
class RunTokenizer:
    """The tokenizer of a run after its one preparation step.

    ``template`` is the chat template of the run's chat datasets (None when all are plain text);
    ``tokenizer.chat_template`` holds its standalone jinja, so every saved tokenizer renders prompts as
    training did. ``added`` are the tokens this step added (the template's special tokens,
    ``data.add_special_tokens``, a pad distinct from eos), in order: the model gets rows for them.
    """

    tokenizer: Any
    template: ChatTemplate | None = None
    added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def prepare_run_tokenizer(cfg: RunConfig, tokenizer: Any = None) -> RunTokenizer:
    """Load the run's tokenizer (unless given; it is changed in place), resolve the chat template of its chat
    datasets and add the tokens the data needs. The one tokenizer step of a run: models and datasets are
    built from its result."""
    from oa_data.settings import DataSettings
    from oa_data.special_tokens import prepare_tokenizer
    from oa_data.templates import resolve_template, standalone_jinja

    if tokenizer is None:
        tokenizer = load_tokenizer(_tokenizer_settings(cfg), cfg.model)
    if not any_chat([*cfg.datasets, *cfg.eval_datasets]):
        return RunTokenizer(tokenizer)
    settings = cfg.section("data", DataSettings)
    template = resolve_template(settings, tokenizer)
    changes = prepare_tokenizer(tokenizer, settings.add_special_tokens, template)
    tokenizer.chat_template = standalone_jinja(template)
    return RunTokenizer(tokenizer, template, list(changes.added), list(changes.notes))


def _tokenizer_settings(cfg: RunConfig) -> TokenizerSettings:
    """``tokenizer:``; when it names no path and the run continues a saved adapter that has its own tokenizer
    (with the tokens it was trained with), that one."""
    adapter = cfg.model.adapter_path if cfg.model else None
    if adapter and cfg.tokenizer.path is None and (Path(adapter).expanduser() / "tokenizer_config.json").is_file():
        return cfg.tokenizer.model_copy(update={"path": adapter})
    return cfg.tokenizer


def any_chat(specs: list[DatasetSpec]) -> bool:
    """Whether any of ``specs`` reads records that need a chat template (not plain text)."""
    from oa_core.plugins import get_registry
    from oa_core.schema import Text

    reg = get_registry()
    return any(reg.get("dataset_format", s.format).record_type is not Text for s in specs)


def load_tokenizer(tok: TokenizerSettings, model: ModelSettings | None = None):
    """The tokenizer at ``tokenizer.path`` (default ``model.path``); no remote code unless asked.

    A missing pad token becomes unk when unk differs from eos; otherwise the data pipeline's
    ``prepare_tokenizer`` adds a distinct ``<pad>`` (pad must never be eos).
    """
    from transformers import AutoTokenizer

    key = "tokenizer.path" if tok.path else "model.path"
    raw = tok.path or (model.path if model else None)
    if not raw:
        raise OAError("tokenizer.path: no tokenizer given", hint="set tokenizer.path or model.path")
    path, local = resolve_source(raw, key)
    if tok.trust_remote_code:
        warn(f"tokenizer.trust_remote_code is on: Python code from '{raw}' will run in this process")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path,
            use_fast=tok.use_fast,
            trust_remote_code=tok.trust_remote_code,
            revision=model.revision if model and not tok.path else None,
            local_files_only=local or is_offline(),
        )
    except (OSError, ValueError) as e:
        raise load_error(key, raw, local, e) from None
    if tokenizer.pad_token is None and tokenizer.unk_token not in (None, tokenizer.eos_token):
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer
