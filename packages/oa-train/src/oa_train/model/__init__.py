"""Model provider and patcher: tokenizer, model, new tokens, patches, PEFT or freezing.

Importing this package is light (pydantic only); torch, transformers and peft load inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oa_train.model.settings import (
    FreezeSettings,
    NewToken,
    NewTokenSettings,
    PeftSettings,
    register_sections,
)

__all__ = [
    "FreezeSettings",
    "NewToken",
    "NewTokenSettings",
    "PeftSettings",
    "PreparedModel",
    "patch_options",
    "prepare_model",
    "register_sections",
]


@dataclass
class PreparedModel:
    """A run's model, ready to train: ``tokenizer`` is the :class:`~oa_data.tokenizer.RunTokenizer` it was
    built for, ``manifest`` describes what was done (for ``run_manifest.json``) and ``provides`` holds the
    capabilities its patches added (``PatchResult.provides``, e.g. ``"linear_ce"``)."""

    model: Any
    tokenizer: Any
    manifest: dict
    provides: dict[str, Callable] = field(default_factory=dict)


def prepare_model(run_config, run_tokenizer=None, registry=None, *, num_labels: int | None = None,
                  packed_rows: bool | None = None, show_table: bool = True) -> PreparedModel:
    """Build the model of a validated run config for ``run_tokenizer`` (default: prepared here with
    :func:`oa_data.tokenizer.prepare_run_tokenizer`).

    In order: the model (embeddings resized for the tokens the tokenizer step added), ``new_tokens``, patches
    (``model.patches``, options from :func:`patch_options`), then an existing adapter (``model.adapter_path``,
    kept trainable), a new PEFT adapter (``peft``) or freezing (``freeze``), and the trainable-parameter table
    (printed when ``show_table``, always in ``manifest["trainable"]``). ``packed_rows``: whether the method trains
    on packed rows (default: ``data.packing``), which picks the default attention (:func:`default_attention`).
    """
    from oa_core.errors import OAError
    from oa_core.plugins import get_registry
    from oa_data.tokenizer import prepare_run_tokenizer
    from oa_infer.models import check_adapter_path, load_adapter, load_model
    from oa_train.model.freezing import apply_freeze, trainable_report
    from oa_train.model.patcher import apply_patches
    from oa_train.model.peft_setup import apply_peft, qlora_quantization
    from oa_train.model.tokens import add_new_tokens

    settings = run_config.model
    if settings is None:
        raise OAError("model: no model given", hint="add a model: section with at least path:")
    peft = run_config.section("peft", PeftSettings)
    freeze = run_config.section("freeze", FreezeSettings)
    new_tokens = run_config.section("new_tokens", NewTokenSettings)
    adapter = settings.adapter_path
    if peft.method != "none" and freeze.active:
        raise OAError(
            f"freeze: applies to full fine-tuning only (peft.method is {peft.method}, the base model is frozen)",
            hint="remove the freeze section or set peft.method: none",
        )
    if adapter and (peft.method != "none" or freeze.active):
        raise OAError(
            "model.adapter_path: cannot be combined with peft.method or freeze",
            hint="continue the saved adapter (no peft/freeze section) or start a new one (no adapter_path)",
        )
    if adapter:
        check_adapter_path(adapter)

    run_tokenizer = run_tokenizer or prepare_run_tokenizer(run_config)
    tokenizer = run_tokenizer.tokenizer
    quantization = qlora_quantization(peft) if peft.method == "qlora" else None
    settings, attention_note = default_attention(run_config, settings, packed_rows)
    model = load_model(settings, num_labels=num_labels, quantization=quantization)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    rows = model.get_input_embeddings().weight.shape[0]
    new_tokens_report = add_new_tokens(model, tokenizer, new_tokens, run_tokenizer.added)
    if adapter and any(t["init"] != "existing" for t in new_tokens_report.values()):
        raise OAError(
            "new_tokens: a saved adapter (model.adapter_path) cannot get new tokens, their rows would not train",
            hint="list only tokens the adapter already has, or train a new adapter",
        )
    registry = registry or get_registry()
    names = settings.patches if settings.patches is not None else default_patches(registry)
    patches, provides = apply_patches(model, names, registry, patch_options(run_config, names))
    if adapter:
        model = load_adapter(model, adapter, trainable=True)
    elif peft.method != "none":
        model = apply_peft(model, peft, tokenizer=tokenizer, new_token_ids=[t["id"] for t in new_tokens_report.values()])
    else:
        apply_freeze(model, freeze)
    stop_ids = stop_at_end_of_turn(model, run_tokenizer)
    report = trainable_report(model)
    if show_table:
        print(report.render())
    manifest = {
        "model": settings.path,
        "adapter_path": adapter,
        "peft": peft.method,
        "patches": patches,
        "new_tokens": new_tokens_report,
        "eos_token_id": stop_ids,
        "attn_implementation": attention_note,
        "trainable": report.to_dict(),
    }
    if model.get_input_embeddings().weight.shape[0] > rows:
        manifest["resized_embeddings_to"] = len(tokenizer)
    return PreparedModel(model, run_tokenizer, manifest, provides)


def default_attention(run_config, settings, packed_rows: bool | None = None):
    """``model.attn_implementation`` when the config names none: for packed rows (``packed_rows``, default
    ``data.packing``) on a GPU, flex attention with a block mask per packed row (attention only within each
    sample, no padding), which runs about twice as fast as sdpa's masked full attention over the row; the model's
    own default otherwise. Returns the settings to load with and a note for the manifest."""
    import torch

    from oa_data.settings import DataSettings

    if settings.attn_implementation:
        return settings, settings.attn_implementation
    data = run_config.section("data", DataSettings)
    packed = data.packing if packed_rows is None else packed_rows
    if packed and data.pose is None and torch.cuda.is_available() and _flex_available():
        return settings.model_copy(update={"attn_implementation": "flex_attention"}), "flex_attention (packed rows)"
    return settings, "the model's default"


def _flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def stop_at_end_of_turn(model, run_tokenizer) -> list[int]:
    """Make generation stop at the end of an answer as the training template writes it: the generation
    config's ``eos_token_id`` becomes [the template's end-of-turn token, the tokenizer's eos] (saved with the
    model, so ``generate`` and vLLM stop there too). Returns the ids."""
    from oa_infer.prompting import stop_token_ids

    ids = stop_token_ids(run_tokenizer.tokenizer, run_tokenizer.template)
    config = getattr(model, "generation_config", None)
    if config is not None and ids:
        config.eos_token_id = ids if len(ids) > 1 else ids[0]
    return ids


def default_patches(registry) -> list[str]:
    """The patches when ``model.patches`` is not set: ``kernels.all`` on a GPU where oa-kernels is installed."""
    import torch

    return ["kernels.all"] if torch.cuda.is_available() and "kernels.all" in registry.names("model_patch") else []


def patch_options(run_config, names: list[str] | None = None) -> dict[str, dict]:
    """Options of each patch in ``names`` (default ``model.patches``): a patch named ``<section>.<name>`` (e.g.
    ``kernels.rope``) gets the fields of the run config's ``<section>:`` section, when it is set."""
    out = {}
    names = names if names is not None else (run_config.model.patches or []) if run_config.model else []
    for name in names:
        section = getattr(run_config, name.split(".", 1)[0], None) if "." in name else None
        if section is not None and hasattr(section, "model_dump"):
            out[name] = section.model_dump()
    return out
