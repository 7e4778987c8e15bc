"""A tiny run to break: a random-init Llama (tied embeddings, 256 positions) saved with the Llama-2 tokenizer,
12 alpaca rows, and ``run_config(name, **changes)`` writing a YAML run config into tmp_path."""

from __future__ import annotations

import pytest
import yaml


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, llama_tok, tiny_llama_config) -> str:
    import torch
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("reliability-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True)).save_pretrained(path)
    llama_tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def run_config(tmp_path, small_model_dir, alpaca_seed):
    """``run_config(name="run", **train) -> path`` of a 4-step SFT run into ``tmp_path/name`` (checkpoints every 2)."""
    (tmp_path / "train.jsonl").write_text("\n".join(alpaca_seed.read_text().splitlines()[:12]) + "\n")

    def make(name: str = "run", output_dir: str | None = None, **train) -> str:
        doc = {"method": "sft", "seed": 5, "output_dir": output_dir or str(tmp_path / name),
               "model": {"path": small_model_dir, "dtype": "float32"},
               "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca"}],
               "data": {"chat_template": "chatml", "max_length": 256, "cache_dir": str(tmp_path / "cache")},
               "train": {"max_steps": 4, "per_device_batch_size": 2, "learning_rate": 1e-3, "save_steps": 2,
                         "logging_steps": 1} | train}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return str(path)

    return make
