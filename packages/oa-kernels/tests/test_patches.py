"""Patches on tiny random HF models: patched forward/backward equals the unpatched model."""

import copy
import logging

import pytest
import torch

from oa_core.errors import OAError
from oa_kernels import patches
from oa_kernels.activations import GELU
from oa_kernels.selftest import ACTIVE

SMALL = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(autouse=True)
def _restore_rope():
    yield
    patches.restore_rope()
    ACTIVE.clear()


def _model(kind: str):
    import transformers as tf

    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL, num_key_value_heads=2, head_dim=8))
    if kind == "gemma":
        cfg = tf.GemmaConfig(**SMALL, num_key_value_heads=1, head_dim=8, hidden_activation="gelu_pytorch_tanh")
        return tf.GemmaForCausalLM(cfg)
    if kind == "gpt_neox":  # exact (erf) GELU with biases, partial rotary
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**SMALL, hidden_act="gelu", rotary_pct=0.5))
    if kind == "gpt2":  # gelu_new (tanh), Conv1D projections
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                  bos_token_id=0, eos_token_id=0))
    raise AssertionError(kind)


def _loss_and_grads(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _compare(kind, apply, device, **options):
    torch.manual_seed(0)
    model = _model(kind).to(device).eval()  # no dropout; gradients still flow
    patched = copy.deepcopy(model)
    ids = torch.randint(0, 96, (2, 12), device=device)
    labels = ids.clone()
    labels[0, :4] = -100
    want, want_grads = _loss_and_grads(model, ids, labels)
    description = apply(patched, **options).description
    got, grads = _loss_and_grads(patched, ids, labels)
    assert torch.allclose(got.loss, want.loss, atol=1e-5), (got.loss, want.loss)
    assert grads.keys() == want_grads.keys()
    for name, g in grads.items():
        assert torch.allclose(g, want_grads[name], atol=1e-5, rtol=1e-4), name
    return patched, got, description


def test_llama_rope_and_fused_ce(device):
    patched, out, description = _compare("llama", patches.apply_all, device)
    assert "rope: transformers.models.llama.modeling_llama" in description
    assert "geglu: skipped" in description and "gelu: skipped" in description  # SiLU model
    assert "swiglu: 2 SwiGLU MLPs" in description and "rmsnorm: 5 RMSNorm layers" in description
    assert out.logits is None  # the fused loss never builds logits
    import transformers.models.llama.modeling_llama as llama

    assert llama.apply_rotary_pos_emb.__module__ == "oa_kernels.rope"
    ids = torch.randint(0, 96, (1, 5), device=device)
    assert patched(input_ids=ids).logits.shape == (1, 5, 96)  # without labels: the model's own forward


def test_fused_ce_honours_num_items_in_batch(device):
    torch.manual_seed(0)
    model = _model("llama").to(device).eval()
    patched = copy.deepcopy(model)
    patches.apply_fused_linear_ce(patched)
    ids = torch.randint(0, 96, (2, 7), device=device)
    want = model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(5)).loss
    got = patched(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(5)).loss
    assert torch.allclose(got, want, atol=1e-5)


def test_gemma_geglu_keeps_tanh(device):
    patched, _, description = _compare("gemma", patches.apply_geglu, device)
    assert "2 GeGLU (tanh) MLPs" in description
    assert all(m.act_fn_variant == "tanh" for m in patched.modules() if hasattr(m, "act_fn_variant"))


def test_gpt_neox_gelu_stays_erf_with_fused_bias(device):
    patched, _, description = _compare("gpt_neox", patches.apply_all, device)
    assert "2 GELU (erf) activations, 2 with the bias fused" in description
    acts = [m for m in patched.modules() if isinstance(m, GELU)]
    assert acts and all(a.approximate == "none" for a in acts)  # never erf -> tanh


def test_gpt2_gelu_new_is_tanh(device):
    patched, _, description = _compare("gpt2", patches.apply_gelu, device)
    assert "GELU (tanh)" in description and "2 with the bias fused" in description


def test_failed_self_test_falls_back_or_errors(device, monkeypatch, caplog):
    import oa_kernels.patches as p

    monkeypatch.setattr(p, "test_device", lambda model: torch.device(device))
    monkeypatch.setattr(p, "geglu", lambda a, b, approximate: a * b)  # a broken kernel
    model = _model("gemma").to(device)
    with caplog.at_level(logging.INFO, logger="oa_kernels"):
        result = p.apply_geglu(model)
    assert "not applied" in result.description and not result.applied and "self-test" in ACTIVE["geglu"]
    assert not any(hasattr(m, "act_fn_variant") for m in model.modules())
    assert "geglu self-test failed" in caplog.text and "oa-kernels active: geglu=fallback" in caplog.text
    with pytest.raises(OAError, match="kernels.geglu: self-test failed") as e:
        p.apply_geglu(model, on_failure="error")
    assert "\n" not in str(e.value)


def test_switches_and_bad_options(device):
    model = _model("llama")
    off = patches.apply_rope(model, rope=False)
    assert off.description == "rope: off (kernels.rope: false)" and not off.applied
    import transformers.models.llama.modeling_llama as llama

    assert llama.apply_rotary_pos_emb.__module__ != "oa_kernels.rope"
    with pytest.raises(OAError, match="kernels.self_tset: Extra inputs") as e:
        patches.apply_rope(model, self_tset=False)
    assert "allowed keys" in e.value.hint
    with pytest.raises(OAError, match="no gated GELU MLP"):
        patches.apply_geglu(model)


def test_unsupported_lm_head_is_refused():
    import transformers as tf

    cfg = tf.Gemma2Config(**SMALL, num_key_value_heads=1, head_dim=8)
    with pytest.raises(OAError, match="final_logit_softcapping"):
        patches.apply_fused_linear_ce(tf.Gemma2ForCausalLM(cfg))


def test_fused_ce_config_options_reach_the_kernel(device, monkeypatch):
    """`kernels.linear_ce_vocab_parts` / `linear_ce_chunk_size` are passed to every loss call."""
    import oa_kernels.patches as p

    seen = []
    real = p.fused_linear_cross_entropy

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("vocab_parts", "chunk_size")})
        return real(*args, **kwargs)

    monkeypatch.setattr(p, "fused_linear_cross_entropy", spy)
    torch.manual_seed(0)
    model = _model("llama").to(device).eval()
    patched = copy.deepcopy(model)
    result = patches.apply_fused_linear_ce(patched, linear_ce_vocab_parts=2, linear_ce_chunk_size=4)
    ids = torch.randint(0, 96, (2, 7), device=device)
    assert torch.allclose(patched(input_ids=ids, labels=ids).loss, model(input_ids=ids, labels=ids).loss, atol=1e-5)
    assert seen[-1] == {"vocab_parts": 2, "chunk_size": 4}
    h, w = torch.randn(5, 32, device=device), model.lm_head.weight.detach()  # the function oa's trainers get
    result.provides["linear_ce"](h, w, torch.arange(5, device=device), reduction="sum")
    assert seen[-1] == {"vocab_parts": 2, "chunk_size": 4}


def test_compiled_layers_with_the_kernels_equal_the_eager_model(device):
    """compile.layers after kernels.all: the decoder layers run compiled (the kernels' references inside, fused by
    the compiler), the LM head + loss through the fused kernel; loss and gradients equal the plain model's."""
    import torch._dynamo

    from oa_kernels.regional import compile_layers, decoder_layers

    torch._dynamo.reset()

    def both(model, **_):
        patches.apply_all(model)
        return compile_layers(model)

    _compare("llama", both, device)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    model = _model("llama")
    assert [type(m).__name__ for m in decoder_layers(model)] == ["LlamaDecoderLayer"] * 2
    assert compile_layers(model).description == "2 LlamaDecoderLayer layers compiled (torch.compile, regional)"
    assert not compile_layers(torch.nn.Linear(2, 2)).applied  # nothing to compile: said, not silently skipped
