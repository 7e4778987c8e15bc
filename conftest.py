"""Fixtures shared by every package's tests: the repository, its shipped tokenizer and data, a tiny Llama.

Tests build models locally (random init from a config) and read tokenizers and data from this repository;
nothing downloads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def llama_tokenizer_dir() -> str:
    """The Llama-2 SentencePiece tokenizer shipped in assets/ (32,000 tokens)."""
    return str(REPO / "assets" / "tokenizers" / "llama2-sp")


@pytest.fixture(scope="session")
def llama_tok(llama_tokenizer_dir):
    """The Llama-2 tokenizer, loaded once per session: copy it before changing it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama_tokenizer_dir)


@pytest.fixture(scope="session")
def alpaca_seed() -> Path:
    """The shipped alpaca seed tasks (175 instruction rows, jsonl)."""
    return REPO / "examples" / "data" / "alpaca-seed" / "seed_tasks_alpaca.jsonl"


@pytest.fixture(scope="session")
def tiny_llama_config():
    """``tiny_llama_config(**overrides) -> LlamaConfig`` (hidden 32, 2 layers, the Llama-2 tokenizer's vocab)."""
    from transformers import LlamaConfig

    def make(**kw):
        base = dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=32000, pad_token_id=0, max_position_embeddings=256,
        )
        return LlamaConfig(**(base | kw))

    return make


@pytest.fixture
def weights():
    """``weights(folder) -> {name: tensor}`` from a saved model folder."""
    from pathlib import Path

    from safetensors.torch import load_file

    def read(folder) -> dict:
        return load_file(str(Path(folder) / "model.safetensors"))

    return read
