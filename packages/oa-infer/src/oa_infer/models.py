"""Load models (and adapters) from a local folder or a hub id, safely: safetensors only, no remote code unless
asked (with a warning). Used for training (oa-train) and for inference."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from oa_core.config import ModelSettings
from oa_core.errors import OAError, warn
from oa_data.hub import is_offline, load_error, resolve_source

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


def _from_config(cls, model: ModelSettings, path: str, local: bool, kwargs: dict, num_labels: int | None):
    """A randomly initialised model of the architecture in ``path``'s config.json (no weights read)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            path, trust_remote_code=model.trust_remote_code, revision=model.revision,
            local_files_only=kwargs["local_files_only"],
        )
    except (OSError, ValueError) as e:
        raise load_error("model.path", model.path, local, e) from None
    if model.type == "seq_cls":
        config.num_labels = num_labels or config.num_labels
    extra = {k: kwargs[k] for k in ("attn_implementation",) if k in kwargs}
    built = cls.from_config(config, trust_remote_code=model.trust_remote_code, **extra)
    return built if model.dtype == "auto" else built.to(_dtype(model.dtype))


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
    if model.trust_remote_code:
        warn(f"model.trust_remote_code is on: Python code from '{model.path}' will run in this process")
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
    if model.random_init:
        return _from_config(cls, model, path, local, kwargs, num_labels)
    try:
        if model.type == "seq_cls":
            kwargs["num_labels"] = num_labels or _checkpoint_labels(path, kwargs) or 1
        return cls.from_pretrained(path, **kwargs)
    except pickle.UnpicklingError as e:
        unsafe = " ".join(str(e).split()).partition("WeightsUnpickler error:")[2].strip()[:120]
        raise OAError(
            f"model.path: the pickled weights in '{model.path}' hold objects other than tensors, which are not "
            f"loaded ({unsafe or 'refused by torch.load(weights_only=True)'})",
            hint="use safetensors weights; oa never runs code from a weights file",
        ) from None
    except OSError as e:
        if local and kwargs["use_safetensors"] and "safetensors" in str(e).lower():
            raise OAError(
                f"model.path: no safetensors weights in '{model.path}'",
                hint="convert the checkpoint to safetensors, or allow pickled weights from a trusted source "
                "with model.model_kwargs.use_safetensors: false",
            ) from None
        raise load_error("model.path", model.path, local, e) from None
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
        raise load_error("model.path", model.path, local, e) from None


def resize_embeddings(model, num_tokens: int, pad_to_multiple_of: int | None = None) -> bool:
    """Grow the input (and output) embeddings to ``num_tokens`` rows; False when they are large enough."""
    if model.get_input_embeddings().weight.shape[0] >= num_tokens:
        return False
    model.resize_token_embeddings(num_tokens, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    return True


def check_adapter_path(path: str, key: str = "model.adapter_path") -> None:
    if not (Path(path).expanduser() / "adapter_config.json").is_file():
        raise OAError(
            f"{key}: no adapter (adapter_config.json) in '{path}'",
            hint="point to a folder written by save_adapter",
        )


def load_adapter(model, path: str, *, trainable: bool = True, key: str = "model.adapter_path"):
    """Load the adapter saved at ``path`` onto ``model`` (whose embeddings already match the adapter's vocabulary)."""
    from peft import PeftModel

    check_adapter_path(path, key)
    try:
        return PeftModel.from_pretrained(model, str(Path(path).expanduser()), is_trainable=trainable)
    except (OSError, ValueError, RuntimeError) as e:
        raise OAError(
            f"{key}: cannot load the adapter in '{path}': {' '.join(str(e).split())[:200]}",
            hint="was it trained on this base model and vocabulary?",
        ) from None
