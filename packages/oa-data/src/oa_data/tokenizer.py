"""Load the tokenizer a run config names (local folder or hub id), torch-free."""

from __future__ import annotations

from oa_core.config import ModelSettings, TokenizerSettings
from oa_core.errors import OAError
from oa_data.hub import is_offline, load_error, resolve_source


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
