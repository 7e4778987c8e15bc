"""Load tokenizers and models from a local folder or a hub id, safely (no remote code, safetensors)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from oa_core.config import ModelSettings, TokenizerSettings
from oa_core.errors import OAError

_OWN_KWARGS = (
    "trust_remote_code",
    "revision",
    "dtype",
    "torch_dtype",
    "attn_implementation",
    "num_labels",
    "quantization_config",
    "local_files_only",
    "adapter_kwargs",
)


def is_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _looks_local(path: str) -> bool:
    """A path meant as a local folder (absolute, relative with ./ or ~, or more than one '/')."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path


def resolve_source(path: str, key: str) -> tuple[str, bool]:
    """``(path, local)`` for a model/tokenizer source; a one-line error when a local folder is missing."""
    expanded = Path(path).expanduser()
    if expanded.is_dir():
        return str(expanded), True
    if expanded.exists() or _looks_local(path):
        what = "is not a folder" if expanded.exists() else "not found"
        raise OAError(
            f"{key}: local model folder '{path}' {what}",
            hint="check the path (a hub id looks like 'org/name')",
        )
    return path, False


def _load_error(key: str, path: str, local: bool, err: Exception) -> OAError:
    first = " ".join(str(err).split())[:200]
    if local:
        return OAError(
            f"{key}: cannot load '{path}': {first}", hint="is it a complete transformers model folder?"
        )
    if is_offline():
        return OAError(
            f"{key}: '{path}' is not a local folder and is not in the hub cache (offline mode)",
            hint="download it first, point to a local folder, or unset HF_HUB_OFFLINE",
        )
    return OAError(
        f"{key}: cannot load '{path}' from the hub: {first}", hint="check the id, revision and your network"
    )


def load_tokenizer(tok: TokenizerSettings, model: ModelSettings | None = None):
    """The tokenizer at ``tokenizer.path`` (default ``model.path``); gets a pad token (unk, else eos) if it has none."""
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
        raise _load_error(key, raw, local, e) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def _local_device() -> int:
    import torch

    return int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))


def _dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def _checkpoint_labels(path: str, kwargs: dict) -> int | None:
    """The label count of a checkpoint that already is a sequence classifier."""
    from transformers import AutoConfig

    keys = ("trust_remote_code", "revision", "local_files_only")
    config = AutoConfig.from_pretrained(path, **{k: kwargs[k] for k in keys})
    if any(a.endswith("ForSequenceClassification") for a in config.architectures or ()):
        return config.num_labels
    return None


def load_model(model: ModelSettings, *, num_labels: int | None = None, quantization: Any = None):
    """The model at ``model.path``: causal LM or sequence classifier (``num_labels``; default: the
    checkpoint's labels if it is a classifier, else 1).

    ``quantization`` is a transformers quantization config (QLoRA, see ``peft_setup.qlora_quantization``).
    Weights load from safetensors only unless ``model.model_kwargs.use_safetensors: false``.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    clash = sorted(set(model.model_kwargs) & set(_OWN_KWARGS))
    if clash:
        raise OAError(
            f"model.model_kwargs.{clash[0]}: set through its own key, not model_kwargs",
            hint="use model.dtype, model.attn_implementation, model.trust_remote_code, model.revision",
        )
    path, local = resolve_source(model.path, "model.path")
    kwargs: dict[str, Any] = {
        "dtype": _dtype(model.dtype),
        "trust_remote_code": model.trust_remote_code,
        "revision": model.revision,
        "local_files_only": local or is_offline(),
        "use_safetensors": True,
    }
    if kwargs["local_files_only"]:  # transformers does not pass it on to its adapter_config.json lookup
        kwargs["adapter_kwargs"] = {"local_files_only": True}
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": _local_device()}  # 4-bit weights live on this process's GPU
    kwargs.update(model.model_kwargs)
    cls = AutoModelForSequenceClassification if model.type == "seq_cls" else AutoModelForCausalLM
    try:
        if model.type == "seq_cls":
            kwargs["num_labels"] = num_labels or _checkpoint_labels(path, kwargs) or 1
        return cls.from_pretrained(path, **kwargs)
    except OSError as e:
        if local and kwargs["use_safetensors"] and "safetensors" in str(e).lower():
            raise OAError(
                f"model.path: no safetensors weights in '{model.path}'",
                hint="convert the checkpoint to safetensors, or allow pickled weights from a trusted source "
                "with model.model_kwargs.use_safetensors: false",
            ) from None
        raise _load_error("model.path", model.path, local, e) from None
    except (ValueError, ImportError) as e:
        text = " ".join(str(e).split())
        if model.attn_implementation and ("attn_implementation" in text or "Attention" in text):
            raise OAError(
                f"model.attn_implementation: '{model.attn_implementation}' cannot be used: {text[:160]}",
                hint="use eager or sdpa, or install the package it needs",
            ) from None
        if "Unrecognized configuration class" in text:
            raise OAError(
                f"model.type: '{model.type}' is not available for the model in '{model.path}'",
                hint="use type causal for language models, seq_cls for classifiers/reward models",
            ) from None
        raise _load_error("model.path", model.path, local, e) from None
