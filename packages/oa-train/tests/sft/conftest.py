"""SFT fixtures: tokenized arithmetic Q/A examples, run configs, saved weights."""

from __future__ import annotations

import random

import pytest
import yaml

IGNORE = -100


def qa_example(tok, a: int, b: int, long: bool) -> dict:
    prompt = tok(f"Question: what is {a} plus {b}?\nAnswer:", add_special_tokens=True)["input_ids"]
    text = f" {a} plus {b} makes {a + b}." if long else f" {a + b}"
    answer = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}


@pytest.fixture(scope="session")
def qa_data(llama_tok):
    """(train, eval): 16 + 4 examples of varied lengths and varied numbers of supervised tokens."""
    rng = random.Random(0)
    pairs = [(rng.randint(0, 10 ** rng.randint(1, 4)), rng.randint(0, 999)) for _ in range(20)]
    rows = [qa_example(llama_tok, a, b, long=i % 3 == 0) for i, (a, b) in enumerate(pairs)]
    return rows[:16], rows[16:]


@pytest.fixture
def make_config(tmp_path, tiny_model_dir):
    """``make_config(name, method="sft", **train) -> LoadedConfig`` written to a YAML file and loaded."""
    from oa_core.config import load_config

    def make(name: str = "run", method: str = "sft", overrides=(), **train):
        doc = {
            "method": method, "seed": 7, "output_dir": str(tmp_path / name),
            "model": {"path": tiny_model_dir, "dtype": "float32", "attn_implementation": "sdpa"},
            "train": {"learning_rate": 1e-3, "logging_steps": 1, "save_steps": None, "lr_scheduler": "linear"} | train,
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_config(path, list(overrides))

    return make
