"""Model patches for HF transformers models: swap the kernels into supported architectures.

Each ``apply_*(model, **options)`` takes the ``kernels:`` section's fields as options, self-tests the
kernel on the model's shapes and returns a :class:`~oa_core.extensions.PatchResult` (a one-line description for
the run manifest; whether the kernel is active). ``kernels.fused_linear_ce`` makes the causal LM's forward
compute the loss from the hidden states when given ``labels`` (logits None), as Liger's ``lce_forward`` does,
and provides the fused function as ``"linear_ce"``: oa's trainers compute label log-probs through it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import types

import torch
import torch.nn.functional as F

from oa_core.errors import OAError
from oa_core.extensions import PatchResult
from oa_kernels import architectures, reference
from oa_kernels.activations import GELU, bias_gelu, geglu, gelu, swiglu
from oa_kernels.linear_ce import fused_linear_cross_entropy
from oa_kernels.rmsnorm import rms_norm
from oa_kernels.rope import hf_apply_rotary_pos_emb
from oa_kernels.selftest import ACTIVE, log_active, relative_error, run_self_test, test_device
from oa_kernels.settings import settings_from

TEST_ROWS = 64

# module -> original apply_rotary_pos_emb, so that tests (and users) can undo the process-wide swap
_ORIGINAL_ROPE: dict[types.ModuleType, object] = {}


def gelu_variant(module) -> str | None:
    """The exact GELU variant of an HF activation module ('none' = erf, 'tanh'), None if not a plain GELU."""
    from transformers import activations as act

    if isinstance(module, (torch.nn.GELU, GELU)):
        return module.approximate
    if type(module) is act.GELUActivation:
        return "none"
    if type(module) in (act.GELUTanh, act.NewGELUActivation, act.FastGELUActivation):
        return "tanh"
    return None  # quick/clipped/accurate GELUs have other formulas: left alone


def _model_type(model) -> str:
    return getattr(getattr(model, "config", None), "model_type", "?")


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def _finish(name: str, done: str, applied: bool = True, provides: dict | None = None) -> PatchResult:
    log_active()
    return PatchResult(f"{name}: {done} [{ACTIVE.get(name, 'off')}]", applied, provides or {})


def _off(name: str) -> PatchResult:
    return PatchResult(f"{name}: off (kernels.{name}: false)", applied=False)


# ---------------------------------------------------------------- GELU / bias+GELU


def _neox_mlp_forward(self, x):
    fc = self.dense_h_to_4h
    return self.dense_4h_to_h(bias_gelu(F.linear(x, fc.weight), fc.bias, self.act.approximate))


def _gpt2_mlp_forward(self, x):
    fc = self.c_fc
    h = bias_gelu(torch.matmul(x, fc.weight), fc.bias, self.act.approximate)
    return self.dropout(self.c_proj(h))


def _bias_fused_forward(module):
    """A bias+GELU forward for MLPs whose first projection's bias feeds the activation (GPT-NeoX, GPT-2)."""
    fc = getattr(module, "dense_h_to_4h", None)
    if isinstance(fc, torch.nn.Linear) and fc.bias is not None and hasattr(module, "dense_4h_to_h"):
        return _neox_mlp_forward
    fc = getattr(module, "c_fc", None)
    if type(fc).__name__ == "Conv1D" and hasattr(module, "c_proj") and hasattr(module, "dropout"):
        return _gpt2_mlp_forward
    return None


def apply_gelu(model, **options) -> PatchResult:
    settings = settings_from(options)
    if not settings.gelu:
        return _off("gelu")
    found = [(parent, name, v) for parent in model.modules() for name, child in parent.named_children()
             if (v := gelu_variant(child)) is not None]
    if not found:
        act = getattr(model.config, "hidden_act", None) or getattr(model.config, "activation_function", "?")
        raise OAError(f"kernels.gelu: no GELU activation in this {_model_type(model)} model (activation '{act}')",
                      hint="it handles gelu, gelu_new, gelu_fast and gelu_pytorch_tanh; drop the patch")
    width = getattr(model.config, "intermediate_size", None) or 4 * model.config.hidden_size
    variants = sorted({v for _, _, v in found})

    def check(device):
        x = torch.randn(TEST_ROWS, width, device=device, dtype=_dtype(model)) * 3
        bias = torch.randn(width, device=device, dtype=x.dtype)
        return max(max(relative_error(gelu(x, v), reference.gelu(x, v)),
                       relative_error(bias_gelu(x, bias, v), reference.bias_gelu(x, bias, v))) for v in variants)

    if not run_self_test("gelu", settings, test_device(model), check):
        return _finish("gelu", "not applied", applied=False)
    fused = 0
    for parent, name, v in found:
        setattr(parent, name, GELU(v))
        forward = _bias_fused_forward(parent) if name == "act" else None
        if forward is not None:
            parent.forward = types.MethodType(forward, parent)
            fused += 1
    names = "/".join("erf" if v == "none" else "tanh" for v in variants)
    return _finish("gelu", f"{len(found)} GELU ({names}) activations, {fused} with the bias fused")


# ---------------------------------------------------------------- GeGLU


def _geglu_mlp_forward(self, x):
    return self.down_proj(geglu(self.gate_proj(x), self.up_proj(x), self.act_fn_variant))


def apply_geglu(model, **options) -> PatchResult:
    settings = settings_from(options)
    if not settings.geglu:
        return _off("geglu")
    mlps = [m for m in model.modules() if all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn"))
            and gelu_variant(m.act_fn) is not None]
    if not mlps:
        raise OAError(f"kernels.geglu: no gated GELU MLP in this {_model_type(model)} model",
                      hint="GeGLU needs gate_proj/up_proj/down_proj with a GELU act_fn; for SiLU models drop the patch")
    variants = sorted({gelu_variant(m.act_fn) for m in mlps})

    def check(device):
        shape = (TEST_ROWS, mlps[0].gate_proj.out_features)
        a, b = (torch.randn(shape, device=device, dtype=_dtype(model)) * 3 for _ in range(2))
        return max(relative_error(geglu(a, b, v), reference.geglu(a, b, v)) for v in variants)

    if not run_self_test("geglu", settings, test_device(model), check):
        return _finish("geglu", "not applied", applied=False)
    for m in mlps:
        m.act_fn_variant = gelu_variant(m.act_fn)
        m.forward = types.MethodType(_geglu_mlp_forward, m)
    names = "/".join("erf" if v == "none" else "tanh" for v in variants)
    return _finish("geglu", f"{len(mlps)} GeGLU ({names}) MLPs")


# ---------------------------------------------------------------- SwiGLU


def _swiglu_mlp_forward(self, x):
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _is_silu(module) -> bool:
    from transformers import activations as act

    return type(module) in (torch.nn.SiLU, getattr(act, "SiLUActivation", torch.nn.SiLU))


def apply_swiglu(model, **options) -> PatchResult:
    settings = settings_from(options)
    if not settings.swiglu:
        return _off("swiglu")
    mlps = [m for m in model.modules() if all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn"))
            and _is_silu(m.act_fn)]
    if not mlps:
        raise OAError(f"kernels.swiglu: no gated SiLU MLP in this {_model_type(model)} model",
                      hint="SwiGLU needs gate_proj/up_proj/down_proj with a SiLU act_fn; drop the patch")

    def check(device):
        shape = (TEST_ROWS, mlps[0].gate_proj.out_features)
        a, b = (torch.randn(shape, device=device, dtype=_dtype(model)) * 3 for _ in range(2))
        return relative_error(swiglu(a, b), reference.swiglu(a, b))

    if not run_self_test("swiglu", settings, test_device(model), check):
        return _finish("swiglu", "not applied", applied=False)
    for m in mlps:
        m.forward = types.MethodType(_swiglu_mlp_forward, m)
    return _finish("swiglu", f"{len(mlps)} SwiGLU MLPs")


# ---------------------------------------------------------------- RMSNorm


def _rmsnorm_forward(self, x):
    return rms_norm(x, self.weight, self.variance_epsilon)


def apply_rmsnorm(model, **options) -> PatchResult:
    settings = settings_from(options)
    if not settings.rmsnorm:
        return _off("rmsnorm")
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm") and hasattr(m, "variance_epsilon")
             and isinstance(getattr(m, "weight", None), torch.nn.Parameter) and m.weight.dim() == 1]
    if not norms:
        raise OAError(f"kernels.rmsnorm: no Llama-style RMSNorm in this {_model_type(model)} model",
                      hint="the kernel computes weight * x/rms(x) with a `variance_epsilon`; drop the patch")
    original = type(norms[0]).forward

    def check(device):
        norm = copy.deepcopy(norms[0]).to(device)
        with torch.no_grad():
            norm.weight.normal_()
        x = torch.randn(TEST_ROWS, norm.weight.shape[0], device=device, dtype=_dtype(model)) * 3
        return relative_error(rms_norm(x, norm.weight, norm.variance_epsilon), original(norm, x))

    if not run_self_test("rmsnorm", settings, test_device(model), check):
        return _finish("rmsnorm", "not applied", applied=False)
    for m in norms:
        m.forward = types.MethodType(_rmsnorm_forward, m)
    return _finish("rmsnorm", f"{len(norms)} RMSNorm layers")


# ---------------------------------------------------------------- RoPE


def _modeling_module(model) -> types.ModuleType:
    for cls in type(model).__mro__:
        module = importlib.import_module(cls.__module__)
        if hasattr(module, "apply_rotary_pos_emb"):
            return module
    raise OAError(f"kernels.rope: {type(model).__name__} has no apply_rotary_pos_emb to replace",
                  hint="this patch supports HF models with rotary embeddings (llama, mistral, qwen, gemma, ...)")


def _rotary(model):
    for m in model.modules():
        if hasattr(m, "inv_freq") and callable(m):
            return m
    raise OAError(f"kernels.rope: no rotary embedding module in this {_model_type(model)} model",
                  hint="check model.patches; this model may not use RoPE")


def apply_rope(model, **options) -> PatchResult:
    settings = settings_from(options)
    if not settings.rope:
        return _off("rope")
    module = _modeling_module(model)
    original = _ORIGINAL_ROPE.get(module, module.apply_rotary_pos_emb)
    rotary, cfg = _rotary(model), model.config
    hq = cfg.num_attention_heads
    hk = getattr(cfg, "num_key_value_heads", None) or hq
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq

    def check(device):
        seq, dtype = TEST_ROWS // 2, _dtype(model)
        pos = torch.arange(seq, device=device)[None]
        x = torch.randn(1, seq, cfg.hidden_size, device=device, dtype=dtype)
        cos, sin = copy.deepcopy(rotary).to(device)(x, pos)  # a copy: the model stays where it is
        q = torch.randn(1, seq, hq, head_dim, device=device, dtype=dtype).transpose(1, 2)
        k = torch.randn(1, seq, hk, head_dim, device=device, dtype=dtype).transpose(1, 2)
        want = original(q, k, cos, sin)
        got = hf_apply_rotary_pos_emb(q.clone(), k.clone(), cos, sin)
        return max(relative_error(g, w) for g, w in zip(got, want, strict=True))

    if not run_self_test("rope", settings, test_device(model), check):
        return _finish("rope", "not applied", applied=False)
    _ORIGINAL_ROPE.setdefault(module, original)
    module.apply_rotary_pos_emb = hf_apply_rotary_pos_emb
    return _finish("rope", f"{module.__name__}.apply_rotary_pos_emb replaced (every such model in this process)")


def restore_rope() -> None:
    """Undo :func:`apply_rope` in every modeling module it changed."""
    while _ORIGINAL_ROPE:
        module, original = _ORIGINAL_ROPE.popitem()
        module.apply_rotary_pos_emb = original


# ---------------------------------------------------------------- fused linear cross-entropy


def _causal_lm_parts(model):
    head = model.get_output_embeddings()
    cfg = model.config
    odd = [k for k in ("final_logit_softcapping", "logits_scaling", "logit_scale") if getattr(cfg, k, None)]
    if head is None or not isinstance(head, torch.nn.Linear) or head.bias is not None or odd:
        why = f"its config sets {odd[0]}" if odd else "its LM head is not a bias-free Linear"
        raise OAError(f"kernels.fused_linear_ce: this {_model_type(model)} model is not supported ({why})",
                      hint="drop kernels.fused_linear_ce from model.patches for this model")
    return model.base_model, head


def _fused_ce_forward(self, input_ids=None, labels=None, shift_labels=None, num_items_in_batch=None,
                      logits_to_keep=0, **kwargs):
    """The causal-LM forward with ``labels``: loss through the fused kernel, no logits returned."""
    if labels is None and shift_labels is None:
        return self._oa_unfused_forward(input_ids=input_ids, logits_to_keep=logits_to_keep, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    body, head = _causal_lm_parts(self)
    out = body(input_ids=input_ids, **kwargs)
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
    hidden = out.last_hidden_state
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = self._oa_linear_ce(hidden, head.weight, shift_labels.to(hidden.device), reduction=reduction)
    if num_items_in_batch is not None:
        loss = loss / num_items_in_batch
    return CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=getattr(out, "past_key_values", None),
                                  hidden_states=getattr(out, "hidden_states", None),
                                  attentions=getattr(out, "attentions", None))


def apply_fused_linear_ce(model, **options) -> PatchResult:
    settings = settings_from(options)
    if not settings.fused_linear_ce:
        return _off("fused_linear_ce")
    _, head = _causal_lm_parts(model)

    def check(device):
        w = head.weight.detach().to(device)
        h = torch.randn(TEST_ROWS, w.shape[1], device=device, dtype=w.dtype)
        labels = torch.randint(0, w.shape[0], (TEST_ROWS,), device=device)
        labels[::7] = -100
        return relative_error(fused_linear_cross_entropy(h, w, labels), reference.linear_cross_entropy(h, w, labels))

    if not run_self_test("fused_linear_ce", settings, test_device(model), check):
        return _finish("fused_linear_ce", "not applied", applied=False)
    linear_ce = functools.partial(fused_linear_cross_entropy, vocab_parts=settings.linear_ce_vocab_parts,
                                  chunk_size=settings.linear_ce_chunk_size)
    model._oa_linear_ce = linear_ce
    if not hasattr(model, "_oa_unfused_forward"):
        model._oa_unfused_forward = model.forward
        model.forward = types.MethodType(_fused_ce_forward, model)
    return _finish("fused_linear_ce", "loss from hidden states and the LM head in chunks; logits=None with labels",
                   provides={"linear_ce": linear_ce})


APPLY = {"geglu": apply_geglu, "gelu": apply_gelu, "swiglu": apply_swiglu, "rmsnorm": apply_rmsnorm, "rope": apply_rope,
         "fused_linear_ce": apply_fused_linear_ce}


def apply_all(model, **options) -> PatchResult:
    """Every switched-on kernel that this model supports; the others are named as skipped."""
    settings_from(options)
    results = []
    for name, apply in APPLY.items():
        arch = architectures.BY_KERNEL[name]
        if "*" not in arch and _model_type(model) not in arch:
            results.append(PatchResult(f"{name}: skipped ({_model_type(model)} not supported)", applied=False))
            continue
        try:
            results.append(apply(model, **options))
        except OAError as e:
            results.append(PatchResult(f"{name}: skipped ({e.message})", applied=False))
    return PatchResult("; ".join(r.description for r in results), any(r.applied for r in results),
                       {k: v for r in results for k, v in r.provides.items()})
