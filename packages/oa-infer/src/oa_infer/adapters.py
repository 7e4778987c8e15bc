"""Saved PEFT adapters: what one is (its type, base model, the quantization it was trained on) and putting it on its
base with the vocabulary it was trained with."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oa_core.errors import OAError
from oa_core.io import atomic_write_text
from oa_infer.models import check_adapter_path, load_adapter, resize_embeddings

QUANTIZATION_FILE = "adapter_quantization.json"  # beside adapter_config.json: peft does not record QLoRA


@dataclass(frozen=True)
class AdapterInfo:
    """A saved adapter: ``base`` is its ``base_model_name_or_path``; ``quantization`` the quantization config of
    the base it was trained on (QLoRA), as :func:`record_quantization` wrote it."""

    path: str
    peft_type: str
    base: str | None
    prompt_learning: bool
    quantization: dict | None = None

    @property
    def has_tokenizer(self) -> bool:
        return (Path(self.path).expanduser() / "tokenizer_config.json").is_file()


def read_adapter(path: str | os.PathLike, key: str = "--adapter") -> AdapterInfo:
    """The adapter saved in folder ``path`` (``key`` names the argument in errors)."""
    from peft import PeftConfig

    folder = Path(path).expanduser()
    if not folder.exists():
        raise OAError(f"{key}: '{path}' not found", hint="give the folder of a saved adapter (adapter_config.json)")
    check_adapter_path(str(path), key)
    try:
        config = PeftConfig.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise OAError(f"{key}: cannot read the adapter config in '{path}': {' '.join(str(e).split())[:160]}",
                      hint="is adapter_config.json from a peft adapter?") from None
    quantization = None
    if (folder / QUANTIZATION_FILE).is_file():
        quantization = json.loads((folder / QUANTIZATION_FILE).read_text(encoding="utf-8"))
    peft_type = getattr(config.peft_type, "value", config.peft_type)
    return AdapterInfo(str(path), str(peft_type), config.base_model_name_or_path, config.is_prompt_learning,
                       quantization)


def record_quantization(model, folder: str | os.PathLike) -> None:
    """Note in ``folder``, where the adapter of the peft model ``model`` is saved, the quantization of the base it
    is trained on (QLoRA); nothing for a full-precision base or a model without adapter."""
    if not hasattr(model, "get_base_model"):
        return
    config = getattr(getattr(model.get_base_model(), "config", None), "quantization_config", None)
    if config is None:
        return
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    atomic_write_text(Path(folder) / QUANTIZATION_FILE, json.dumps(data, indent=1, default=str) + "\n")


def adapter_vocab_rows(model, path: str | os.PathLike) -> int:
    """The embedding rows the adapter in ``path`` was trained with, as far as its weights show it (whole
    embedding or head matrices: ``modules_to_save``, saved embedding layers, LoRA on them); 0 when they do not."""
    from safetensors import safe_open

    file = Path(path).expanduser() / "adapter_model.safetensors"
    if not file.is_file():
        return 0
    names = {n for n, m in model.named_modules() if m is model.get_input_embeddings() or m is model.get_output_embeddings()}
    rows = 0
    with safe_open(str(file), framework="pt") as f:
        for key in f.keys():
            inner = key.removeprefix("base_model.model.")
            if not any(inner.startswith(n + ".") for n in names) or "trainable_tokens" in inner:
                continue
            shape = f.get_slice(key).get_shape()
            if "lora_embedding_A" in inner:
                rows = max(rows, shape[1])
            elif len(shape) == 2 and not any(m in inner for m in ("lora_A", "lora_embedding_B", "lora_magnitude")):
                rows = max(rows, shape[0])
    return rows


def apply_saved_adapter(base, info: AdapterInfo, tokenizer: Any, key: str = "--adapter"):
    """``base`` with the adapter of ``info`` loaded for inference, after growing its embeddings to the adapter's
    vocabulary (its tokenizer's tokens, or the rows of its saved matrices)."""
    resize_embeddings(base, max(len(tokenizer), adapter_vocab_rows(base, info.path)))
    return load_adapter(base, str(Path(info.path).expanduser()), trainable=False, key=key)
