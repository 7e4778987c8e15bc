"""Shared by the oa-infer tests: tiny random-init Llamas (a causal LM and a reward model) with the Llama-2 tokenizer
and a small chat template; nothing downloads."""

from __future__ import annotations

import pytest

CHAT = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")


@pytest.fixture
def chat_tok(llama_tok):
    """A copy of the Llama-2 tokenizer with a chat template and pad = unk (as oa's load_tokenizer sets it)."""
    import copy

    tok = copy.deepcopy(llama_tok)
    tok.chat_template = CHAT
    tok.pad_token = tok.unk_token
    return tok


@pytest.fixture(scope="session")
def tiny_lm(tiny_llama_config):
    """A tiny random Llama (eval mode); do not change it in place."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_lm, llama_tok) -> str:
    """``tiny_lm`` saved with the tokenizer and its chat template (as oa-train saves a model)."""
    import copy

    path = tmp_path_factory.mktemp("tiny-lm")
    tiny_lm.save_pretrained(path)
    tok = copy.deepcopy(llama_tok)
    tok.chat_template = CHAT
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def reward_dir(tmp_path_factory, tiny_llama_config, llama_tok) -> str:
    """A tiny random reward model (LlamaForSequenceClassification, num_labels 1) saved with the tokenizer."""
    import copy

    import torch
    from transformers import LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(1)
    LlamaForSequenceClassification(tiny_llama_config(num_labels=1)).save_pretrained(path)
    tok = copy.deepcopy(llama_tok)
    tok.chat_template = CHAT
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows) -> str``."""
    import json

    def write(path, rows) -> str:
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        return str(path)

    return write
