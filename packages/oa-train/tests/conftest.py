"""Shared by the oa-train tests: the real Llama-2 tokenizer and a tiny random-init Llama config."""

from __future__ import annotations

from pathlib import Path

import pytest

TOKENIZER_DIR = Path(__file__).resolve().parents[3] / "assets" / "tokenizers" / "llama2-sp"


@pytest.fixture(scope="session")
def tiny_llama_config():
    """``tiny_llama_config(**overrides) -> LlamaConfig`` (hidden 32, 2 layers, the tokenizer's vocab)."""
    from transformers import LlamaConfig

    def make(**kw):
        base = dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=32000, pad_token_id=0, max_position_embeddings=256,
        )
        return LlamaConfig(**(base | kw))

    return make


@pytest.fixture(scope="session")
def llama_tok():
    """The Llama-2 SentencePiece tokenizer (loaded once per session; do not mutate)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


@pytest.fixture(scope="session")
def target_losses():
    """``target_losses(model, batch)``: the per-target cross-entropy of a collated batch (plain route, row-major)."""
    from oa_train.training.logprobs import LabelLogProbs

    def losses(model, batch):
        t = LabelLogProbs().tokens(model, batch)
        return -t.values[t.mask]

    return losses
