"""Label log-probabilities: per token and per sequence (also of packed rows), and the fused linear+CE route
(a patch's ``provides["linear_ce"]``) equal to the logits route in values and gradients, without logits."""

from __future__ import annotations

import copy

import pytest
import torch

from oa_core.plugins import get_registry
from oa_train.model.patcher import apply_patches
from oa_train.training.batching import IGNORE, collate
from oa_train.training.logprobs import LabelLogProbs

VOCAB = 256


def _model(tiny_llama_config):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, tie_word_embeddings=False)).float()


def _rows(lengths=(6, 9, 5)):
    g = torch.Generator().manual_seed(1)
    rows = []
    for n in lengths:
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * 2 + ids[2:]})  # a 2-token prompt
    return rows


def _packed(rows):
    return [dict(r, position_ids=list(range(len(r["input_ids"])))) for r in rows]


def test_per_sequence_log_probs_of_a_packed_row_equal_each_sequence_alone(tiny_llama_config):
    model, rows, plain = _model(tiny_llama_config), _rows(), LabelLogProbs()
    alone = torch.stack([plain.tokens(model, collate([r])).per_sequence()[0] for r in rows])
    batch = collate(_packed(rows))  # one flattened row, positions restart per sequence
    packed = plain.tokens(model, batch).per_sequence(batch["position_ids"])
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    # by hand: log_softmax of the logits at the previous position, over the supervised tokens of one sequence
    r = rows[1]
    logp = torch.log_softmax(model(input_ids=torch.tensor([r["input_ids"]])).logits[0].float(), -1)
    want = sum(logp[t - 1, r["input_ids"][t]] for t in range(2, len(r["input_ids"])))
    torch.testing.assert_close(alone[1], want, rtol=1e-5, atol=1e-5)
    padded = plain.tokens(model, collate(rows, pad_id=0))
    torch.testing.assert_close(padded.per_sequence(), alone, rtol=1e-5, atol=1e-5)
    assert int(padded.mask.sum()) == sum(len(r["input_ids"]) - 2 for r in rows)


@pytest.mark.parametrize("packed", [False, True])
def test_fused_route_equals_the_logits_route_in_values_and_gradients(tiny_llama_config, packed):
    plain_model = _model(tiny_llama_config)
    fused_model = copy.deepcopy(plain_model)
    _, provides = apply_patches(fused_model, ["kernels.fused_linear_ce"], get_registry())
    fused = LabelLogProbs.for_model(fused_model, provides["linear_ce"])
    plain = LabelLogProbs.for_model(plain_model, None)
    assert fused.fused and not plain.fused and fused.route.startswith("fused")
    rows = _packed(_rows()) if packed else _rows()
    batch = collate(rows, pad_id=0)

    want, correct = plain.nll_sum(plain_model, batch)
    got, no_argmax = fused.nll_sum(fused_model, batch)
    assert correct is not None and no_argmax is None  # the fused route has no logits, so no argmax
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    want.backward()
    got.backward()
    for (name, a), (_, b) in zip(plain_model.named_parameters(), fused_model.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)

    per_token = fused.tokens(fused_model, batch)
    reference = plain.tokens(plain_model, batch)
    assert per_token.correct is None and torch.equal(per_token.mask, reference.mask)
    torch.testing.assert_close(per_token.values, reference.values, rtol=1e-5, atol=1e-5)
    # without a request the routed head is the plain head: logits for generation and evaluation
    with torch.no_grad():
        torch.testing.assert_close(fused_model(input_ids=batch["input_ids"]).logits,
                                   plain_model(input_ids=batch["input_ids"]).logits)


def test_the_fused_route_never_builds_logits(tiny_llama_config):
    model = _model(tiny_llama_config)
    _, provides = apply_patches(model, ["kernels.fused_linear_ce"], get_registry())
    shapes = []
    model.lm_head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    batch = collate(_rows(), pad_id=0)
    LabelLogProbs.for_model(model, provides["linear_ce"]).nll_sum(model, batch)
    LabelLogProbs.for_model(model, provides["linear_ce"]).tokens(model, batch)
    assert shapes == [(), tuple(batch["input_ids"].shape)]  # a sum, then one value per position: no vocabulary axis


def test_a_head_that_is_not_a_plain_linear_stays_on_the_logits_route(tiny_llama_config):
    model = _model(tiny_llama_config)
    model.lm_head = torch.nn.Sequential(model.lm_head)  # e.g. a PEFT wrapper around the head
    route = LabelLogProbs.for_model(model, lambda *a, **k: None)
    assert not route.fused and "the LM head is a Sequential" in route.route


def test_temperature_and_entropy_on_both_routes(tiny_llama_config):
    """Log-probs at temperature T are those of the logits / T on both routes (gradients too); the entropy is that
    of the tempered distribution at every target, on the logits route."""
    plain_model = _model(tiny_llama_config)
    fused_model = copy.deepcopy(plain_model)
    _, provides = apply_patches(fused_model, ["kernels.fused_linear_ce"], get_registry())
    fused, plain = LabelLogProbs.for_model(fused_model, provides["linear_ce"]), LabelLogProbs()
    batch = collate(_rows(), pad_id=0)
    got = plain.tokens(plain_model, batch, temperature=0.7, entropy=True)
    logits = plain_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1] / 0.7
    logp = logits.float().log_softmax(-1)
    mask = batch["labels"][:, 1:] != IGNORE
    want = logp.gather(-1, batch["labels"][:, 1:].clamp(min=0)[..., None])[..., 0] * mask
    torch.testing.assert_close(got.values, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.entropy, -(logp.exp() * logp).sum(-1) * mask, rtol=1e-5, atol=1e-6)
    assert not got.entropy.requires_grad and got.values.requires_grad
    routed = fused.tokens(fused_model, batch, temperature=0.7, entropy=True)
    assert routed.entropy is None  # no logits on the fused route
    torch.testing.assert_close(routed.values, got.values, rtol=1e-5, atol=1e-5)
    got.values.sum().backward()
    routed.values.sum().backward()
    for (name, a), (_, b) in zip(plain_model.named_parameters(), fused_model.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
