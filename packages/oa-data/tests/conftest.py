"""Shared tokenizers: the Llama-2 SentencePiece tokenizer shipped in assets/, and GPT-2's byte-level BPE
converted offline from assets/tokenizers/gpt2/gpt2.tiktoken (two tokenizer families)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "tokenizers"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
               "<|system|>", "<|prompter|>", "<|assistant|>"]


def load_llama():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ASSETS / "llama2-sp"))


def load_gpt2():
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(ASSETS / "gpt2" / "gpt2.tiktoken"), pattern=GPT2_PATTERN,
                                extra_special_tokens=["<|endoftext|>"]).converted()
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=eot, eos_token=eot, unk_token=eot)


@pytest.fixture(scope="session")
def raw_tokenizers():
    """Unmodified tokenizers by family; copy before changing them."""
    return {"llama": load_llama(), "gpt2": load_gpt2()}


@pytest.fixture(scope="session")
def chat_tokenizers(raw_tokenizers):
    """Tokenizers that know the built-in templates' special tokens."""
    from oa_data.special_tokens import add_special_tokens

    out = {}
    for name, tok in raw_tokenizers.items():
        tok = copy.deepcopy(tok)
        add_special_tokens(tok, CHAT_TOKENS)
        out[name] = tok
    return out


@pytest.fixture(params=["llama", "gpt2"])
def tok(request, chat_tokenizers):
    return chat_tokenizers[request.param]


def supervised_runs(enc, tokenizer) -> list[str]:
    """The decoded text of each run of consecutive supervised tokens."""
    runs, current = [], []
    for t, label in zip(enc.input_ids, enc.labels, strict=True):
        if label != -100:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


@pytest.fixture(name="runs")
def _runs():
    """:func:`supervised_runs` (test modules cannot import conftest under --import-mode=importlib)."""
    return supervised_runs
