"""Loss normalised by the global number of supervised tokens: accumulation k == batch × k."""

from __future__ import annotations

import torch

from oa_train.sft import run_sft
from oa_train.training.batching import collate, micro_batches, num_targets

# plain SGD without clipping: the update is proportional to the gradient (Adam's and a clipped one are not)
SGD = {"optimizer": "sgd", "learning_rate": 0.5, "max_grad_norm": None}


def test_accumulation_equals_larger_batch(make_config, qa_data, weights, tiny_model_dir):
    train, _ = qa_data
    data = lambda cfg, tok: (train[:8], [])  # noqa: E731
    big = make_config("big", max_steps=1, per_device_batch_size=4, gradient_accumulation_steps=1, **SGD)
    acc = make_config("acc", max_steps=1, per_device_batch_size=2, gradient_accumulation_steps=2, **SGD)
    run_sft(big, prepare_data=data)
    run_sft(acc, prepare_data=data)
    w_big, w_acc, w0 = weights(f"{big.config.output_dir}/model"), weights(f"{acc.config.output_dir}/model"), weights(tiny_model_dir)
    assert w_big.keys() == w_acc.keys()
    for name in w_big:
        torch.testing.assert_close(w_acc[name], w_big[name], rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(w_big[n], w0[n]) for n in w0), "the step changed nothing"


def test_micro_batch_means_would_differ(qa_data, tiny_llama_config, target_losses):
    """Control for the test above: the micro-batches have unequal token counts, so averaging per
    micro-batch means (the naive accumulation) gives a different loss than the per-token mean."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    train, _ = qa_data
    first_step = micro_batches(8, batch_size=2, seed=7)[:2]  # the micro-batches of the run above (seed 7)
    batches = [collate([train[s.index] for s in mb]) for mb in first_step]
    sums = [target_losses(model, b).sum() for b in batches]
    counts = [num_targets(b) for b in batches]
    assert counts[0] != counts[1]
    per_token = sum(sums) / sum(counts)
    naive = sum(s / c for s, c in zip(sums, counts, strict=True)) / 2
    assert abs(per_token.item() - naive.item()) > 1e-4
