"""SwiGLU ``silu(gate) * up`` and Llama's RMSNorm: forward and gradients against the PyTorch references."""

import pytest
import torch

from oa_kernels import reference, rms_norm, swiglu

DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 33), (3, 5, 130)])
def test_swiglu_forward_and_gradients(shape, dtype, device, assert_close):
    gate, up = ((torch.randn(shape, device=device) * 3).to(dtype).requires_grad_() for _ in range(2))
    out = swiglu(gate, up)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (gate, up), grad)
    leaves = [t.detach().double().requires_grad_() for t in (gate, up)]
    want = reference.swiglu(*leaves)
    wanted = torch.autograd.grad(want, leaves, grad.double())
    assert out.dtype == dtype
    assert_close(out, want, dtype)
    for g, w in zip(got, wanted, strict=True):
        assert_close(g, w, dtype)


@pytest.mark.parametrize(("x_dtype", "w_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                  (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize("shape", [(5, 64), (2, 37, 96), (40, 48)])
def test_rmsnorm_forward_and_gradients(shape, x_dtype, w_dtype, device, assert_close):
    x = (torch.randn(shape, device=device) * 2).to(x_dtype).requires_grad_()
    w = (torch.rand(shape[-1], device=device) + 0.5).to(w_dtype).requires_grad_()
    out = rms_norm(x, w, 1e-6)
    want = reference.rms_norm(x.detach().double().requires_grad_(), w.detach().double().requires_grad_(), 1e-6)
    assert out.dtype == torch.promote_types(x_dtype, w_dtype) and out.shape == x.shape
    assert_close(out, want, x_dtype)
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, w), grad)
    leaves = [x.detach().double().requires_grad_(), w.detach().double().requires_grad_()]
    wx, ww = torch.autograd.grad(reference.rms_norm(*leaves, 1e-6), leaves, grad.double())
    assert gx.dtype == x_dtype and gw.dtype == w_dtype
    assert_close(gx, wx, x_dtype)
    assert_close(gw, ww, x_dtype)


def test_rmsnorm_matches_the_llama_module(device):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(48, eps=1e-5).to(device)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 7, 48, device=device)
    torch.testing.assert_close(rms_norm(x, norm.weight, norm.variance_epsilon), norm(x), rtol=1e-5, atol=1e-5)


def test_compiled_regions_run_the_references_without_graph_breaks(device):
    """Inside torch.compile the kernels step aside for the references (the compiler fuses those itself), so a
    patched layer compiles into one graph, as compiled decoding needs for a whole-step CUDA graph."""
    import torch._dynamo

    from oa_kernels import apply_rope
    from oa_kernels.runtime import use_triton

    x, w = torch.randn(2, 3, 16, device=device), torch.rand(16, device=device) + 0.5
    q, k = torch.randn(2, 4, 3, 8, device=device), torch.randn(2, 2, 3, 8, device=device)
    angles = torch.randn(2, 3, 4, device=device).repeat(1, 1, 2)  # HF's table: both halves alike
    cos, sin = angles.cos(), angles.sin()

    def layer(x, w, q, k, cos, sin):
        qo, ko = apply_rope(q, k, cos, sin)
        return swiglu(rms_norm(x, w, 1e-6), x), qo, ko

    torch._dynamo.reset()
    explained = torch._dynamo.explain(layer)(x, w, q, k, cos, sin)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(layer, backend="eager", fullgraph=True)(x, w, q, k, cos, sin)
    for got, want in zip(compiled, layer(x, w, q, k, cos, sin), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert use_triton(x, w)  # outside a compiled region the kernels run
