"""GELU (exact erf and tanh), bias+GELU, GeGLU ``gelu(a) * b`` and SwiGLU ``silu(a) * b``: Triton
forward/backward + autograd.

One elementwise forward kernel and one backward kernel cover the four ops through constexpr flags.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from oa_kernels import reference
from oa_kernels.errors import check_approximate, check_same_shape
from oa_kernels.runtime import use_triton

BLOCK = 4096  # elements per program; with NUM_WARPS, the best of a sweep on an H100
NUM_WARPS = 8
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
INV_SQRT_2 = tl.constexpr(0.7071067811865476)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _gelu_and_grad(x, TANH: tl.constexpr, SILU: tl.constexpr):
    """gelu(x) and gelu'(x) in fp32 (tanh form as x*sigmoid(2z): no cancellation, no libdevice); or, with SILU,
    silu(x) = x*sigmoid(x) and its derivative."""
    if SILU:
        s = tl.sigmoid(x)
        y = x * s
        dy = s * (1.0 + x * (1.0 - s))
    elif TANH:
        z2 = 2.0 * SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
        s = tl.sigmoid(z2)
        y = x * s
        dy = s + x * s * (1.0 - s) * 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
    else:
        cdf = 0.5 * (1.0 + tl.erf(x * INV_SQRT_2))
        y = x * cdf
        dy = cdf + x * INV_SQRT_2PI * tl.exp(-0.5 * x * x)
    return y, dy


@triton.jit
def _fwd_kernel(a_ptr, b_ptr, bias_ptr, out_ptr, n, ncols, TANH: tl.constexpr, SILU: tl.constexpr,
                HAS_MUL: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        a += tl.load(bias_ptr + offs % ncols, mask=mask, other=0.0).to(tl.float32)
    y, _ = _gelu_and_grad(a, TANH, SILU)
    if HAS_MUL:
        y = y * tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(dy_ptr, a_ptr, b_ptr, bias_ptr, da_ptr, db_ptr, n, ncols, TANH: tl.constexpr, SILU: tl.constexpr,
                HAS_MUL: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        a += tl.load(bias_ptr + offs % ncols, mask=mask, other=0.0).to(tl.float32)
    g, dg = _gelu_and_grad(a, TANH, SILU)
    if HAS_MUL:
        b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(db_ptr + offs, (dy * g).to(db_ptr.dtype.element_ty), mask=mask)
        dy = dy * b
    tl.store(da_ptr + offs, (dy * dg).to(da_ptr.dtype.element_ty), mask=mask)


def _launch(kernel, n, *args, **flags):
    kernel[(triton.cdiv(n, BLOCK),)](*args, BLOCK=BLOCK, num_warps=NUM_WARPS, **flags)


class _GeluFunction(torch.autograd.Function):
    """``act(a [+ bias]) [* b]`` (act: gelu erf/tanh, or silu); saves only the inputs and recomputes act in
    backward."""

    @staticmethod
    def forward(ctx, a, b, bias, approximate):
        a = a.contiguous()
        b = b.contiguous() if b is not None else None
        out = torch.empty_like(a)
        flags = dict(TANH=approximate == "tanh", SILU=approximate == "silu", HAS_MUL=b is not None,
                     HAS_BIAS=bias is not None)
        ncols = a.shape[-1]
        _launch(_fwd_kernel, a.numel(), a, b if b is not None else a, bias if bias is not None else a, out,
                a.numel(), ncols, **flags)
        ctx.save_for_backward(a, b, bias)
        ctx.flags = flags
        return out

    @staticmethod
    def backward(ctx, dy):
        a, b, bias = ctx.saved_tensors
        dy = dy.contiguous()
        da = torch.empty_like(a)
        db = torch.empty_like(b) if b is not None else None
        _launch(_bwd_kernel, a.numel(), dy, a, b if b is not None else a, bias if bias is not None else a,
                da, db if db is not None else da, a.numel(), a.shape[-1], **ctx.flags)
        dbias = da.reshape(-1, a.shape[-1]).sum(0, dtype=torch.float32).to(bias.dtype) if bias is not None else None
        return da, db, dbias, None


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU; ``approximate='none'`` is the exact erf form, ``'tanh'`` the tanh approximation."""
    check_approximate(approximate)
    if not use_triton(x):
        return reference.gelu(x, approximate)
    return _GeluFunction.apply(x, None, None, approximate)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``gelu(x + bias)`` with ``bias`` over the last dimension, in one pass."""
    check_approximate(approximate)
    if bias.shape != x.shape[-1:] or not use_triton(x, bias):
        return reference.bias_gelu(x, bias, approximate)
    return _GeluFunction.apply(x, None, bias, approximate)


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """``gelu(gate) * up`` (GeGLU MLPs), with the GELU variant of the model."""
    check_approximate(approximate)
    check_same_shape("geglu", gate, up)
    if gate.dtype != up.dtype or not use_triton(gate, up):
        return reference.geglu(gate, up, approximate)
    return _GeluFunction.apply(gate, up, None, approximate)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` (SwiGLU MLPs: Llama, Mistral, Qwen ...)."""
    check_same_shape("swiglu", gate, up)
    if gate.dtype != up.dtype or not use_triton(gate, up):
        return reference.swiglu(gate, up)
    return _GeluFunction.apply(gate, up, None, "silu")


class GELU(torch.nn.Module):
    """Drop-in for HF's GELU activation modules, keeping their exact variant."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = check_approximate(approximate)

    def forward(self, x):
        return gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
