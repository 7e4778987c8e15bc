"""RMSNorm as Hugging Face's Llama family computes it — normalise in fp32, cast back to the input dtype, scale by
the weight — as Triton forward/backward kernels + autograd.

Forward: one program per block of rows, the row's reciprocal RMS kept for the backward. Backward: the input
gradient ``rstd * (g - x̂ · mean(g · x̂))`` with ``g = dy · w``, and the weight gradient summed per program into
a small fp32 buffer (``programs × H``), then over programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from oa_kernels import reference
from oa_kernels.runtime import use_triton

ROWS_PER_PROGRAM = 16


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, n_rows, n_cols, eps, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    cmask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0)
    for r in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + r
        if row < n_rows:
            x = tl.load(x_ptr + row * n_cols + cols, mask=cmask, other=0.0)
            xf = x.to(tl.float32)
            rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
            normed = (xf * rstd).to(x.dtype)  # as HF: back to the input dtype before the weight
            y = w.to(tl.float32) * normed.to(tl.float32)
            tl.store(y_ptr + row * n_cols + cols, y.to(y_ptr.dtype.element_ty), mask=cmask)
            tl.store(rstd_ptr + row, rstd)


@triton.jit
def _bwd_kernel(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_ptr, n_rows, n_cols, ROWS: tl.constexpr,
                BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    cmask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    for r in range(ROWS):
        row = pid.to(tl.int64) * ROWS + r
        if row < n_rows:
            x = tl.load(x_ptr + row * n_cols + cols, mask=cmask, other=0.0)
            dy = tl.load(dy_ptr + row * n_cols + cols, mask=cmask, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + row)
            xhat = x.to(tl.float32) * rstd
            dw += dy * xhat.to(x.dtype).to(tl.float32)
            g = dy * w
            dx = rstd * (g - xhat * (tl.sum(g * xhat, axis=0) / n_cols))
            tl.store(dx_ptr + row * n_cols + cols, dx.to(dx_ptr.dtype.element_ty), mask=cmask)
    tl.store(dw_ptr + pid * n_cols + cols, dw, mask=cmask)


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        rows, cols = x2.shape
        out_dtype = torch.promote_types(weight.dtype, x.dtype)
        y = torch.empty((rows, cols), device=x.device, dtype=out_dtype)
        rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
        block = triton.next_power_of_2(cols)
        programs = triton.cdiv(rows, ROWS_PER_PROGRAM)
        _fwd_kernel[(programs,)](x2, weight, y, rstd, rows, cols, eps, ROWS=ROWS_PER_PROGRAM, BLOCK=block,
                                 num_warps=_warps(block))
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        rows, cols = x2.shape
        dy = dy.reshape(rows, cols).contiguous()
        dx = torch.empty_like(x2)
        programs = triton.cdiv(rows, ROWS_PER_PROGRAM)
        dw_parts = torch.empty((programs, cols), device=x2.device, dtype=torch.float32)
        block = triton.next_power_of_2(cols)
        _bwd_kernel[(programs,)](dy, x2, weight, rstd, dx, dw_parts, rows, cols, ROWS=ROWS_PER_PROGRAM, BLOCK=block,
                                 num_warps=_warps(block))
        return dx.reshape(ctx.shape), dw_parts.sum(0).to(weight.dtype), None


def _warps(block: int) -> int:
    return 4 if block <= 2048 else 8 if block <= 8192 else 16


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``weight * (x / rms(x))`` with HF's casts (see the module docstring); ``weight`` over the last dimension."""
    if weight.shape != x.shape[-1:] or not use_triton(x, weight):
        return reference.rms_norm(x, weight, eps)
    return _RMSNormFunction.apply(x, weight, eps)


class RMSNorm(torch.nn.Module):
    """Drop-in forward for HF RMSNorm modules (``weight`` and ``variance_epsilon``)."""

    def __init__(self, weight: torch.nn.Parameter, eps: float):
        super().__init__()
        self.weight, self.variance_epsilon = weight, eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.variance_epsilon)
