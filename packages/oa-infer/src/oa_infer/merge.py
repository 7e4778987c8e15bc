"""Merge a LoRA adapter into its base model and save a plain model that loads without peft."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from oa_core.config import ModelSettings, TokenizerSettings
from oa_core.errors import OAError, warn
from oa_core.io import atomic_dir, refuse_input_as_output

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Merged:
    """What :func:`merge_adapter` saved: ``tied`` is the saved ``tie_word_embeddings``; ``eos_token_id`` the
    generation config's stop tokens."""

    path: Path
    base: str
    dtype: str
    vocab_size: int
    tied: bool
    eos_token_id: list[int]


def merge_and_save(model, tokenizer, out_dir: str | os.PathLike, *, dtype: str | None = None) -> Path:
    """Merge the adapter of ``model`` into its weights and save a plain model (safetensors) with ``tokenizer``
    atomically. The generation config stops at the end of turn of the tokenizer's chat template and at eos;
    input and output embeddings stay tied only when the merged weights are equal. ``dtype``: the saved
    weights' (default: as loaded)."""
    _save(_merge(model, tokenizer, dtype), tokenizer, out_dir)
    return Path(out_dir)


def _save(model, tokenizer, out_dir: str | os.PathLike) -> None:
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def _merge(model, tokenizer, dtype: str | None):
    import torch
    from peft import PeftModel

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise OAError(
            "merge: the model is loaded quantized (bitsandbytes); an adapter cannot be merged into quantized weights",
            hint="merge onto the full-precision base: oa merge --adapter ADAPTER --output DIR [--base UNQUANTIZED_BASE]",
        )
    if isinstance(model, PeftModel):
        config = model.peft_config[model.active_adapter]
        if config.is_prompt_learning:
            raise OAError(
                f"merge: {config.peft_type.value} is a prompt-learning adapter (virtual tokens, no weight deltas): "
                "it cannot be merged into the weights",
                hint="use it with its base: oa chat --model BASE --adapter ADAPTER",
            )
        tied = _untie_head(model.get_base_model())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")  # handled by _settle_tying
            model = model.merge_and_unload()
        _settle_tying(model, tied)
    if dtype not in (None, "auto"):
        model = model.to(getattr(torch, dtype))
    _stop_at_end_of_turn(model, tokenizer)
    return model


def merge_adapter(
    model_settings: ModelSettings | str | None,
    adapter_path: str,
    out_dir: str | os.PathLike,
    tokenizer_settings: TokenizerSettings | None = None,
    *,
    dtype: str = "auto",
) -> Merged:
    """Merge the (Q)LoRA adapter saved at ``adapter_path`` into its base and save the model to ``out_dir``.

    The base (``model_settings``, a path, or None for the adapter's ``base_model_name_or_path``) loads in float32
    and full precision; its embeddings grow to the adapter's vocabulary. The tokenizer is the adapter's when it
    saved one. ``dtype``: the saved weights' (auto: the base's saved dtype). A QLoRA adapter is merged into the
    full-precision base, with a warning.
    """
    from oa_data.tokenizer import load_tokenizer
    from oa_infer.adapters import apply_saved_adapter, read_adapter
    from oa_infer.models import load_model

    if dtype not in DTYPES:
        raise OAError(f"--dtype: unknown dtype '{dtype}'", hint=f"one of {', '.join(DTYPES)}")
    info = read_adapter(adapter_path)
    if info.prompt_learning:
        raise OAError(
            f"--adapter: '{adapter_path}' is a prompt-learning adapter ({info.peft_type}: virtual tokens, no weight "
            "deltas); it cannot be merged into the weights",
            hint=f"use it with its base: oa chat --model BASE --adapter {adapter_path}",
        )
    settings = _base_settings(model_settings, info)
    refuse_input_as_output(out_dir, {"--adapter": adapter_path, "--base": settings.path})
    saved_dtype = _check_base(settings)
    if info.quantization:
        bits = "4-bit" if info.quantization.get("load_in_4bit") else "8-bit" if info.quantization.get("load_in_8bit") else "quantized"
        warn(f"'{adapter_path}' was trained on the {bits} (QLoRA) weights of its base; it is merged into the "
             "full-precision base, whose outputs differ slightly from the quantized base with the adapter")
    tok = tokenizer_settings or TokenizerSettings()
    if tok.path is None and info.has_tokenizer:
        tok = tok.model_copy(update={"path": adapter_path})
    tokenizer = load_tokenizer(tok, settings)
    base = load_model(settings.model_copy(update={"dtype": "float32"}))
    model = apply_saved_adapter(base, info, tokenizer)
    target = saved_dtype if dtype == "auto" else dtype
    merged = _merge(model, tokenizer, target)
    _save(merged, tokenizer, out_dir)
    eos = merged.generation_config.eos_token_id
    return Merged(Path(out_dir), settings.path, target, merged.get_input_embeddings().weight.shape[0],
                  bool(merged.config.get_text_config().tie_word_embeddings),
                  list(eos) if isinstance(eos, list | tuple) else [] if eos is None else [eos])


def _base_settings(model_settings: ModelSettings | str | None, info) -> ModelSettings:
    if isinstance(model_settings, ModelSettings):
        return model_settings
    path = model_settings or info.base
    if not path:
        raise OAError(f"--base: the adapter in '{info.path}' does not name its base model (base_model_name_or_path)",
                      hint="pass --base PATH, the model the adapter was trained on")
    return ModelSettings(path=str(path))


def _check_base(settings: ModelSettings) -> str:
    """The dtype the base is saved in (float32 when it names none); a one-line error for a quantized base."""
    from transformers import AutoConfig

    from oa_data.hub import is_offline, load_error, resolve_source

    path, local = resolve_source(settings.path, "--base")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code,
                                            revision=settings.revision, local_files_only=local or is_offline())
    except (OSError, ValueError) as e:
        raise load_error("--base", settings.path, local, e) from None
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else getattr(quantization, "quant_method", None)
        raise OAError(f"--base: '{settings.path}' is saved quantized ({getattr(method, 'value', method) or 'quantization_config'}); "
                      "merging needs its full-precision weights",
                      hint="pass --base the unquantized model the adapter's base was made from")
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(saved).removeprefix("torch.") if saved is not None else "float32"
    return name if name in DTYPES else "float32"


def _embedding_weights(model):
    """The ``weight`` parameters (and their modules) under the input and the output embedding modules, wrapped
    by peft or not."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is None:
        return [], []
    found = {id(inp): [], id(out): []}
    for top in (inp, out):
        for module in top.modules():
            weight = module._parameters.get("weight")
            if weight is not None:
                found[id(top)].append((module, weight))
    return found[id(inp)], found[id(out)]


def _untie_head(model) -> bool:
    """Give the output head its own copy of a weight it shares with the input embeddings, so that merging into
    one does not change the other; True when they were shared."""
    import torch

    inputs, outputs = _embedding_weights(model)
    shared = {id(w) for _, w in inputs}
    copies: dict[int, torch.nn.Parameter] = {}
    for module, weight in outputs:
        if id(weight) in shared:
            copy = copies.setdefault(id(weight), torch.nn.Parameter(weight.detach().clone(), weight.requires_grad))
            module.weight = copy
    return bool(copies)


def _settle_tying(model, tied: bool) -> None:
    """Tie the head to the input embeddings again when the merged weights are equal; otherwise save it untied
    (``tie_word_embeddings: false``): re-tying on load would replace a trained head."""
    import torch

    if not tied:
        return
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    same = inp.weight.shape == out.weight.shape and torch.equal(inp.weight, out.weight)
    if same:
        out.weight = inp.weight
    else:
        warn("the adapter changed the output head apart from the tied input embeddings: "
             "the merged model is saved with untied embeddings (tie_word_embeddings: false)")
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = same


def _stop_at_end_of_turn(model, tokenizer) -> None:
    """The generation config stops where oa-train's does: at the chat template's end of turn and at eos."""
    from oa_infer.prompting import chat_template, saved_template, stop_token_ids

    config = getattr(model, "generation_config", None)
    if config is None or tokenizer is None:
        return
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    if saved_template(tokenizer) is None:
        return
    ids = stop_token_ids(tokenizer, chat_template(tokenizer))
    if ids:
        config.eos_token_id = ids if len(ids) > 1 else ids[0]
