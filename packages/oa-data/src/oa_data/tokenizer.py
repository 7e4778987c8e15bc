"""Load the tokenizer a run config names (local folder or hub id), torch-free."""

from __future__ import annotations

import os
from pathlib import Path

from oa_core.config import ModelSettings, TokenizerSettings
from oa_core.errors import OAError


def tokenizer_source(tok: TokenizerSettings, model: ModelSettings | None) -> str:
    """The path or hub id the tokenizer comes from (``tokenizer.path``, else ``model.path``)."""
    path = tok.path or (model.path if model else None)
    if not path:
        raise OAError("no tokenizer: set tokenizer.path or model.path in the config")
    return path


def load_tokenizer(tok: TokenizerSettings, model: ModelSettings | None = None):
    """``AutoTokenizer.from_pretrained`` with oa's defaults: no remote code unless asked, clear errors."""
    from transformers import AutoTokenizer

    path = tokenizer_source(tok, model)
    key = "tokenizer.path" if tok.path else "model.path"
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not Path(path).expanduser().is_dir():
        raise OAError(f"{key}: tokenizer folder '{path}' not found", hint="give a local folder or a hub id")
    try:
        return AutoTokenizer.from_pretrained(
            str(Path(path).expanduser()) if looks_local else path,
            use_fast=tok.use_fast,
            trust_remote_code=tok.trust_remote_code,
            revision=model.revision if model and not tok.path else None,
        )
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = "the hub is offline (HF_HUB_OFFLINE=1): use a local folder" if offline else "check the path or hub id"
        raise OAError(f"{key}: cannot load tokenizer '{path}': {str(e).splitlines()[0]}", hint=hint) from None
