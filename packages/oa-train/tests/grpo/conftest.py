"""GRPO fixtures: a tiny random Llama over a 14-token digit vocabulary (so that a few RL steps on a CPU can teach
it something), a toy reward plugin, run configs."""

from __future__ import annotations

import json

import pytest
import yaml

from oa_core import RewardFunction, hookimpl
from oa_core.plugins import add_plugin, remove_plugin


@pytest.fixture(scope="session")
def digit_model_dir(tmp_path_factory) -> str:
    """A random-init 2-layer Llama (19k parameters) with a word-level tokenizer of the digits 0-9 and <pad>, <s>,
    </s>, <unk>; a text decodes as its words joined by spaces."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("digit-llama")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {str(d): 4 + d for d in range(10)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
                                 attn_implementation="sdpa")).save_pretrained(path)
    return str(path)


def copy_digit(prompts, completions, **_):
    """The share of the completion's first 4 words that repeat the prompt (a digit)."""
    return [sum(w == p.strip() for w in c.split()[:4]) / 4 for p, c in zip(prompts, completions, strict=True)]


class ToyRewards:
    @hookimpl
    def register_reward_functions(self, register):
        register("toy.copy_digit", RewardFunction(copy_digit, "share of the words that repeat the prompt's digit"))


@pytest.fixture
def toy_rewards():
    add_plugin(ToyRewards(), "toy-rewards")
    yield
    remove_plugin("toy-rewards")


@pytest.fixture
def digit_prompts(tmp_path) -> str:
    """40 one-digit prompts, '3' and '8' alternating (plain text records)."""
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"text": "38"[i % 2]}) + "\n" for i in range(40)))
    return str(path)


@pytest.fixture
def grpo_config(tmp_path, digit_model_dir, digit_prompts):
    """``grpo_config(name, overrides=(), **train) -> path`` of a GRPO run on the digit prompts (copy the digit)."""

    def make(name: str = "run", *, data=None, model=None, top=None, **train) -> str:
        doc = {"method": "grpo", "seed": 0, "output_dir": str(tmp_path / name),
               "model": {"path": digit_model_dir, "dtype": "float32", **(model or {})},
               "datasets": data or [{"path": digit_prompts, "format": "pretraining"}],
               "train": {"rewards": [{"function": "toy.copy_digit"}], "num_generations": 8,
                         "per_device_batch_size": 16, "max_completion_length": 4, "learning_rate": 1e-2,
                         "lr_scheduler": "constant", "logging_steps": 1, "save_steps": None,
                         "log_completions_steps": 0, **train}, **(top or {})}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return str(path)

    return make


@pytest.fixture
def records():
    """``records(folder) -> [metrics.jsonl records]``."""
    from pathlib import Path

    def read(folder) -> list[dict]:
        return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]

    return read
