"""Reward-model and classification fixtures: a tiny random sequence classifier, objectives set up by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


@pytest.fixture
def classifier(tiny_llama_config):
    """``classifier(num_labels=1, dtype=torch.float64)``: a tiny random Llama sequence classifier (64 tokens)."""
    from transformers import LlamaForSequenceClassification

    def make(num_labels: int = 1, dtype=torch.float64, seed: int = 0):
        torch.manual_seed(seed)
        config = tiny_llama_config(num_labels=num_labels, vocab_size=64, pad_token_id=0)
        config._attn_implementation = "sdpa"
        return LlamaForSequenceClassification(config).to(dtype)

    return make


@pytest.fixture
def rm_objective():
    """``rm_objective(**train) -> RMObjective`` set up without a loop (its loss, config and pad id)."""
    from oa_core.plugins import get_registry
    from oa_train.reward.config import RMConfig
    from oa_train.reward.objective import RMObjective

    def make(**train):
        objective = RMObjective()
        tc = RMConfig(**train)
        objective.run = SimpleNamespace(train=tc, pad_id=0)
        objective.loss_fn = get_registry().get("loss", tc.loss).fn
        objective.unit = objective.loss_fn.unit
        return objective

    return make
