"""Merge a LoRA adapter into its base model and save a plain model that loads without peft."""

from __future__ import annotations

import os
from pathlib import Path

from oa_core.errors import OAError
from oa_core.io import atomic_dir
from oa_infer.models import check_adapter_path, load_adapter, load_model, resize_embeddings


def merge_and_save(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Merge a LoRA adapter into the weights and save a plain model (safetensors) and tokenizer atomically."""
    from peft import PeftModel

    if getattr(model, "is_loaded_in_4bit", False):
        raise OAError(
            "peft.method: cannot merge into 4-bit weights",
            hint="merge onto the unquantized base with merge_adapter(model_settings, adapter_path, out_dir)",
        )
    if isinstance(model, PeftModel):
        if model.peft_config[model.active_adapter].is_prompt_learning:
            raise OAError(
                "peft.method: prompt-learning adapters cannot be merged into the weights",
                hint="save the adapter instead",
            )
        model = model.merge_and_unload()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def merge_adapter(
    model_settings, adapter_path: str, out_dir: str | os.PathLike, tokenizer_settings=None
) -> Path:
    """Load the unquantized base of ``model_settings``, apply the (Q)LoRA adapter at ``adapter_path``
    (with its tokenizer and new-token rows) and save the merged model and tokenizer to ``out_dir``."""
    from oa_core.config import TokenizerSettings
    from oa_data.tokenizer import load_tokenizer

    check_adapter_path(adapter_path)
    tok = tokenizer_settings or TokenizerSettings()
    if tok.path is None and (Path(adapter_path).expanduser() / "tokenizer_config.json").is_file():
        tok = tok.model_copy(update={"path": adapter_path})
    tokenizer = load_tokenizer(tok, model_settings)
    base = load_model(model_settings)
    resize_embeddings(base, len(tokenizer))
    return merge_and_save(load_adapter(base, adapter_path, trainable=False), tokenizer, out_dir)
