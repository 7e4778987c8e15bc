"""The routes a preference loss can take give the same numbers: padding-free packed pairs vs padded rows, the
fused linear+CE head vs the logits, a live reference (frozen copy, adapters off) vs the cached log-probs."""

from __future__ import annotations

import copy

import pytest
import torch

from oa_core.plugins import get_registry
from oa_train.model.patcher import apply_patches
from oa_train.preference.reference import AdaptersOff, Frozen
from oa_train.training.logprobs import LabelLogProbs


def _loss_and_grads(objective, model, batch):
    model.zero_grad()
    out = objective.loss(model, batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, rtol=1e-5, atol=1e-6):
    (out_a, grads_a), (out_b, grads_b) = a, b
    torch.testing.assert_close(out_a.loss, out_b.loss, rtol=rtol, atol=atol)
    for name in out_a.metrics:
        torch.testing.assert_close(torch.as_tensor(out_a.metrics[name][0]).float(),
                                   torch.as_tensor(out_b.metrics[name][0]).float(), rtol=rtol, atol=atol, msg=name)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol * 10, atol=atol, msg=name)


@pytest.mark.parametrize("method", ["dpo", "kto", "orpo"])
def test_padding_free_packed_pairs_give_the_losses_of_padded_rows(method, tiny_lm, pairs, unpaired, objective):
    """Every chosen and rejected sequence of 5 pairs in ONE row (positions restarting), log-probs summed per
    sequence: loss, metrics and gradients equal the padded path (fp32, rtol 1e-5)."""
    options = {"loss_type": ["sigmoid", "ipo", "sft"]} if method == "dpo" else {}
    rows = unpaired(6) if method == "kto" else pairs(5, seed=1)
    model, ref = tiny_lm(), tiny_lm(seed=1)
    results = []
    for packed in (False, True):
        obj = objective(method, padding_free=packed, **options)
        if method != "orpo":
            obj.reference = Frozen("another model", ref, LabelLogProbs())
        batch = obj.collate(rows)
        assert (batch["input_ids"].shape[0] == 1) == packed  # the packed micro-batch is one row
        results.append(_loss_and_grads(obj, model, batch))
    _assert_same(*results)


def test_the_fused_linear_ce_route_gives_the_losses_of_the_logits_route(tiny_lm, pairs, objective):
    """With ``kernels.fused_linear_ce`` (no full-vocabulary logits) the DPO loss, metrics and gradients equal the
    logits route's (fp32: rtol 1e-5, gradients 1e-4), for the policy and a frozen reference alike."""
    rows = pairs(4, seed=2)
    results = []
    for fused in (False, True):
        model, ref = tiny_lm(), tiny_lm(seed=1)
        route = LabelLogProbs()
        if fused:
            _, provides = apply_patches(model, ["kernels.fused_linear_ce"], get_registry())
            route = LabelLogProbs.for_model(model, provides["linear_ce"])
            assert route.fused
        obj = objective("dpo", label_logprobs=route, padding_free=True, loss_type=["sigmoid", "sft"])
        obj.reference = Frozen("another model", ref, LabelLogProbs())
        results.append(_loss_and_grads(obj, model, obj.collate(rows)))
    _assert_same(*results)


def test_a_frozen_copy_of_a_fused_model_computes_through_its_own_fused_head(tiny_lm, pairs, objective):
    """``reference.source: copy`` of a policy on the fused route: the copy routes its own head (not the policy's),
    and at the start it gives the policy's log-probs."""
    from oa_train.preference.batches import model_part
    from oa_train.training.frozen import frozen_starting_model

    model = tiny_lm()
    _, provides = apply_patches(model, ["kernels.fused_linear_ce"], get_registry())
    route = LabelLogProbs.for_model(model, provides["linear_ce"])
    obj = objective("dpo", label_logprobs=route)
    obj.run.model = model
    frozen = frozen_starting_model(obj.run, route.linear_ce, key="train.reference.source")
    ref, ref_route = frozen.ready()
    assert ref_route.fused and ref.lm_head is not model.lm_head and not any(p.requires_grad for p in ref.parameters())
    obj.reference = Frozen("a frozen copy", ref, ref_route)
    pairs_logps = obj.log_probs(model, obj.collate(pairs(3)))
    torch.testing.assert_close(pairs_logps.ref_chosen, pairs_logps.chosen.detach(), rtol=1e-6, atol=1e-5)
    shapes = []
    ref.lm_head.register_forward_hook(lambda module, args, out: shapes.append(out.dim()))
    obj.reference(None, model_part(obj.collate(pairs(1))))
    assert shapes == [2]  # (B, S) log-probs from the copy's own routed head: no vocabulary axis


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_cached_reference_log_probs_equal_the_live_reference_exactly(method, tiny_lm, pairs, unpaired, objective):
    """The cache holds what the live reference computes: the losses and gradients are bitwise equal."""
    rows = unpaired(4) if method == "kto" else pairs(4, seed=4)
    model, ref = tiny_lm(), tiny_lm(seed=1)
    live = objective(method)
    live.reference = Frozen("another model", ref, LabelLogProbs())
    cached = objective(method)
    for i, row in enumerate(rows):
        row["split"], row["index"] = "train", i
    cached.tables = {"train": live.reference_rows(live.reference, model, rows)}
    a, b = _loss_and_grads(live, model, live.collate(rows)), _loss_and_grads(cached, model, cached.collate(rows))
    assert torch.equal(a[0].loss, b[0].loss)
    assert all(torch.equal(a[1][n], b[1][n]) for n in a[1])


def test_adapters_off_reference_is_the_base_model(tiny_lm, pairs, objective):
    """Under LoRA the reference is the policy with its adapters disabled: the log-probs of the base model, also
    after the adapter has moved away from zero."""
    from peft import LoraConfig, get_peft_model

    base = tiny_lm()
    policy = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    obj = objective("dpo")
    rows = pairs(3, seed=6)
    batch = obj.collate(rows)
    from oa_train.preference.batches import model_part

    adapters_off = AdaptersOff(LabelLogProbs(), obj.run.accelerator)(policy, model_part(batch))
    base_logps = Frozen("base", base, LabelLogProbs())(None, model_part(batch))
    torch.testing.assert_close(adapters_off, base_logps, rtol=1e-6, atol=1e-6)
    obj.reference = AdaptersOff(LabelLogProbs(), obj.run.accelerator)
    pairs_logps = obj.log_probs(policy, batch)
    assert not torch.allclose(pairs_logps.chosen, pairs_logps.ref_chosen)  # the adapter changes the policy
    assert policy.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.requires_grad
