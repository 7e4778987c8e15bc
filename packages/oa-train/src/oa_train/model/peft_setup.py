"""PEFT through ``peft``: LoRA (rsLoRA, DoRA), QLoRA, prefix, prompt and P-tuning, and saving adapters (loading
and merging them is in oa-infer: ``oa_infer.models``, ``oa_infer.merge``)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from oa_core.errors import OAError
from oa_core.io import atomic_dir
from oa_train.model.settings import PeftSettings


def _task_type(model):
    from peft import TaskType

    kind = type(model).__name__
    return TaskType.SEQ_CLS if kind.endswith("ForSequenceClassification") else TaskType.CAUSAL_LM


def qlora_quantization(settings: PeftSettings):
    """The 4-bit ``BitsAndBytesConfig`` for QLoRA; a clear error without bitsandbytes or a CUDA GPU."""
    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise OAError(
            "peft.method: qlora needs the bitsandbytes package",
            hint="install bitsandbytes, or use peft.method: lora",
        )
    if not torch.cuda.is_available():
        raise OAError(
            "peft.method: qlora needs a CUDA GPU, none is available",
            hint="use peft.method: lora on this machine",
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.quant_type,
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, settings.compute_dtype),
    )


def module_name(model, module) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def _linear_names(model) -> list[str]:
    import torch
    from transformers.pytorch_utils import Conv1D

    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = (torch.nn.Linear, Conv1D)
    return sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, linear) and m is not out_emb}
    )


def _check_targets(model, targets: Sequence[str], key: str) -> None:
    names = [n for n, _ in model.named_modules()]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise OAError(
                f"{key}: no module named '{t}' in this {type(model).__name__}",
                hint=f"linear modules: {', '.join(_linear_names(model))} (or 'all-linear')",
            )


def _token_indices(model, ids: Sequence[int], modules_to_save: Sequence[str]):
    """``trainable_token_indices`` for new tokens: the input embeddings, and an untied output head."""
    if not ids:
        return None
    ids = sorted(set(ids))
    inp = model.get_input_embeddings()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = {module_name(model, inp): ids}
    if out is not None and out.weight.data_ptr() != inp.weight.data_ptr():
        layers[module_name(model, out)] = ids
    # a module trained fully (modules_to_save) saves its new rows anyway
    layers = {n: v for n, v in layers.items() if n.rsplit(".", 1)[-1] not in modules_to_save}
    return layers or None


def _lora_config(model, s: PeftSettings, new_token_ids: Sequence[int]):
    from peft import LoraConfig

    if s.target_modules != "all-linear":
        _check_targets(model, s.target_modules, "peft.target_modules")
    _check_targets(model, s.modules_to_save, "peft.modules_to_save")
    return LoraConfig(
        task_type=_task_type(model),
        r=s.r,
        lora_alpha=s.alpha,
        lora_dropout=s.dropout,
        target_modules=s.target_modules,
        use_rslora=s.use_rslora,
        use_dora=s.use_dora,
        bias=s.bias,
        modules_to_save=list(s.modules_to_save) or None,
        trainable_token_indices=_token_indices(model, new_token_ids, s.modules_to_save),
    )


def _prompt_config(model, s: PeftSettings, tokenizer):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    common = {"task_type": _task_type(model), "num_virtual_tokens": s.num_virtual_tokens}
    if s.modules_to_save:
        _check_targets(model, s.modules_to_save, "peft.modules_to_save")
        common["modules_to_save"] = list(s.modules_to_save)
    if s.method == "prefix":
        extra = {"encoder_hidden_size": s.encoder_hidden_size} if s.encoder_hidden_size else {}
        return PrefixTuningConfig(prefix_projection=s.prefix_projection, **extra, **common)
    if s.method == "ptuning":
        return PromptEncoderConfig(
            encoder_hidden_size=s.encoder_hidden_size or model.config.hidden_size,
            encoder_reparameterization_type=s.encoder_type,
            **common,
        )
    if s.prompt_init_text is None:
        return PromptTuningConfig(**common)
    if tokenizer is None:
        raise OAError("peft.prompt_init_text: needs the tokenizer", hint="pass tokenizer= to apply_peft")
    return PromptTuningConfig(
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text=s.prompt_init_text,
        tokenizer_name_or_path=tokenizer.name_or_path,
        **common,
    )


def apply_peft(model, settings: PeftSettings | None, *, tokenizer=None, new_token_ids: Sequence[int] = ()):
    """Wrap ``model`` in a ``peft`` model for ``settings.method`` (unchanged for ``none``).

    ``new_token_ids``: rows of added tokens, trained and saved with a LoRA adapter
    (``trainable_token_indices`` on the input embeddings and on an untied output head).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    if settings is None or settings.method == "none":
        return model
    if settings.is_prompt_learning and new_token_ids:
        raise OAError(
            f"new_tokens: not supported with peft.method: {settings.method} (the new rows would not be trained or saved)",
            hint="use peft.method: lora, or full fine-tuning",
        )
    if settings.method == "qlora":
        if not getattr(model, "is_loaded_in_4bit", False):
            qlora_quantization(settings)  # raises the missing-package/GPU error first
            raise OAError(
                "peft.method: qlora needs a model loaded in 4 bit",
                hint="load it with quantization=qlora_quantization(...)",
            )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if settings.is_lora:
        config = _lora_config(model, settings, new_token_ids)
    else:
        config = _prompt_config(model, settings, tokenizer)
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise OAError(
            f"peft: {settings.method} cannot wrap this model: {' '.join(str(e).split())[:200]}"
        ) from None


def save_adapter(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save the adapter (with new-token rows, and a note of a QLoRA base's quantization) and the tokenizer into
    ``out_dir`` atomically."""
    from oa_infer.adapters import record_quantization

    with atomic_dir(out_dir) as tmp:
        # new-token rows travel as trainable tokens; whole embedding matrices only through modules_to_save
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        record_quantization(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out_dir)
