"""With `kernels.fused_linear_ce` applied, the recipe's loss goes through the fused kernel (no logits)
and gives the same summed loss and gradients as the plain logits path."""

from __future__ import annotations

import copy

import torch

from oa_core.plugins import get_registry
from oa_train.model.patcher import apply_patches
from oa_train.training.batching import collate
from oa_train.training.loss import loss_sum, uses_fused_loss


def test_fused_linear_ce_patch_is_used_by_the_recipe_loss(tiny_llama_config, qa_data):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    plain = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=False)).float()
    fused = copy.deepcopy(plain)
    apply_patches(fused, ["kernels.fused_linear_ce"], get_registry())
    assert uses_fused_loss(fused) and not uses_fused_loss(plain)

    packed = [dict(ex, position_ids=list(range(len(ex["input_ids"])))) for ex in qa_data[0][:3]]
    batch = collate(packed, pad_id=0)
    want, correct = loss_sum(plain, batch)
    got, fused_correct = loss_sum(fused, batch)
    assert correct >= 0 and fused_correct != fused_correct  # NaN: no logits, no argmax
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    want.backward()
    got.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), fused.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
