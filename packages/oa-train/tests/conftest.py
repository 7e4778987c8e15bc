"""Shared by the oa-train tests: a tiny random-init Llama saved with the tokenizer, per-target losses."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, llama_tok, tiny_llama_config) -> str:
    """A random-init Llama (tied embeddings, 256 positions) saved with the tokenizer: ``model.path`` for run configs."""
    import torch
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True)).save_pretrained(path)
    llama_tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def target_losses():
    """``target_losses(model, batch)``: the per-target cross-entropy of a collated batch (plain route, row-major)."""
    from oa_train.training.logprobs import LabelLogProbs

    def losses(model, batch):
        t = LabelLogProbs().tokens(model, batch)
        return -t.values[t.mask]

    return losses


@pytest.fixture
def cpu_workers_below_two_gpus(monkeypatch):
    """For tests that run 2 processes: on a machine with fewer than 2 GPUs they run on the CPU (gloo)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
