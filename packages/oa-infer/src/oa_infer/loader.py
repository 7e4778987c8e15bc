"""Load a model (with its adapter) and its tokenizer for inference from :class:`GeneratorSettings`, through
:mod:`oa_infer.models` (safetensors only, no remote code unless asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oa_core.errors import OAError
from oa_core.generation import GeneratorSettings


def tokenizer_path(settings: GeneratorSettings) -> str:
    """``settings.tokenizer``, else the adapter's folder when it has a tokenizer (with the tokens it was trained
    with), else the model's."""
    if settings.tokenizer:
        return settings.tokenizer
    if settings.adapter and (Path(settings.adapter).expanduser() / "tokenizer_config.json").is_file():
        return settings.adapter
    return settings.model


def load_inference_tokenizer(settings: GeneratorSettings):
    from oa_core.config import ModelSettings, TokenizerSettings
    from oa_data.tokenizer import load_tokenizer

    tok = TokenizerSettings(path=tokenizer_path(settings), trust_remote_code=settings.trust_remote_code)
    return load_tokenizer(tok, ModelSettings(path=settings.model))


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OAError(f"device: '{name}' asked for, but no CUDA GPU is usable here", hint="use device: cpu or auto")
    return name


def load_pretrained(settings: GeneratorSettings, *, seq_cls: bool = False, attn_implementation: str | None = None,
                    device: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode on ``device``: the model at ``settings.model`` (a causal LM, or a
    sequence classifier / reward model with ``seq_cls``), its embeddings grown to the tokenizer's size, with
    ``settings.adapter`` applied (not merged)."""
    from oa_core.config import ModelSettings
    from oa_infer.adapters import apply_saved_adapter, read_adapter
    from oa_infer.models import load_model, resize_embeddings

    adapter = read_adapter(settings.adapter, "adapter") if settings.adapter else None
    tokenizer = load_inference_tokenizer(settings)
    model_settings = ModelSettings(
        path=settings.model, type="seq_cls" if seq_cls else "causal", dtype=settings.dtype,
        trust_remote_code=settings.trust_remote_code, attn_implementation=attn_implementation,
    )
    if seq_cls and not settings.adapter:
        check_classifier(settings)
    elif seq_cls:
        check_classifier_adapter(settings.adapter)
    model = load_model(model_settings)
    if adapter is not None:  # embeddings grown to the adapter's vocabulary (also rows padded in training)
        model = apply_saved_adapter(model, adapter, tokenizer, key="adapter")
    else:
        resize_embeddings(model, len(tokenizer))
    model.to(resolve_device(device))
    model.eval()
    return model, tokenizer


def check_classifier(settings: GeneratorSettings) -> None:
    """A one-line error unless ``settings.model`` was saved as a sequence classifier (a scoring head would
    otherwise be initialised at random)."""
    from transformers import AutoConfig

    from oa_data.hub import is_offline, resolve_source

    path, local = resolve_source(settings.model, "model")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code,
                                            local_files_only=local or is_offline())
    except (OSError, ValueError) as e:
        raise OAError(f"model: cannot read the config of '{settings.model}': {' '.join(str(e).split())[:160]}") from None
    archs = list(config.architectures or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise OAError(f"model: '{settings.model}' is not a sequence classifier or reward model "
                      f"(architectures: {', '.join(archs) or 'none'})",
                      hint="scoring needs a model saved with a classification head (num_labels)")


def check_classifier_adapter(path: str) -> None:
    """A one-line error unless the adapter at ``path`` was trained for sequence classification."""
    import json

    task = json.loads((Path(path).expanduser() / "adapter_config.json").read_text(encoding="utf-8")).get("task_type")
    if task != "SEQ_CLS":
        raise OAError(f"adapter: '{path}' is a {task or 'untyped'} adapter, not a sequence-classification one",
                      hint="scoring needs a reward model or classifier (an adapter with task_type SEQ_CLS)")
