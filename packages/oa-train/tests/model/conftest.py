"""Tiny random-init models saved to local folders, and the real Llama-2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

VOCAB = 32000


def llama_config(**kw):
    from transformers import LlamaConfig

    base = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        pad_token_id=0,
    )
    return LlamaConfig(**(base | kw))


def _save(model, path: Path) -> str:
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


@pytest.fixture(scope="session")
def tokenizer_path(llama_tokenizer_dir) -> str:
    return llama_tokenizer_dir


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    """Local folders: llama (tied / untied embeddings), llama classifier, gpt2."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, LlamaForSequenceClassification

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    return {
        "llama_tied": _save(LlamaForCausalLM(llama_config(tie_word_embeddings=True)), root / "llama_tied"),
        "llama_untied": _save(
            LlamaForCausalLM(llama_config(tie_word_embeddings=False)), root / "llama_untied"
        ),
        "llama_cls": _save(LlamaForSequenceClassification(llama_config(num_labels=2)), root / "llama_cls"),
        "gpt2": _save(
            GPT2LMHeadModel(
                GPT2Config(
                    n_embd=32,
                    n_layer=2,
                    n_head=4,
                    vocab_size=VOCAB,
                    n_positions=64,
                    bos_token_id=1,
                    eos_token_id=2,
                )
            ),
            root / "gpt2",
        ),
    }


@pytest.fixture(scope="session")
def _tokenizer(tokenizer_path):
    from oa_core.config import TokenizerSettings
    from oa_data.tokenizer import load_tokenizer

    return load_tokenizer(TokenizerSettings(path=tokenizer_path))


@pytest.fixture
def tokenizer(_tokenizer):
    """A fresh copy per test (tests add tokens to it)."""
    import copy

    return copy.deepcopy(_tokenizer)


@pytest.fixture
def load(model_dirs):
    """``load(name, **model_settings)``: the tiny model ``name`` through ``load_model``."""
    from oa_core.config import ModelSettings
    from oa_infer.models import load_model

    def _load(name: str, **kw):
        return load_model(ModelSettings(path=model_dirs[name], dtype="float32", **kw))

    return _load


@pytest.fixture(scope="session")
def sections_registry():
    """A plugin registry with the model config sections (model, tokenizer, peft, freeze, new_tokens) and a
    no-op ``method: noop``, for loading run configs without a trainer."""
    from pydantic import BaseModel

    from oa_core import hookimpl
    from oa_core.extensions import Method
    from oa_core.plugins import PluginManager
    from oa_train.model.settings import register_sections

    class NoopTrain(BaseModel):
        pass

    class SectionsPlugin:
        @hookimpl
        def register_config_sections(self, register):
            register_sections(register)

        @hookimpl
        def register_methods(self, register):
            register("noop", Method(config=NoopTrain, objective=lambda: None))

    pm = PluginManager(entry_points=False)
    pm.register(SectionsPlugin(), "sections-test")
    return pm.registry()
