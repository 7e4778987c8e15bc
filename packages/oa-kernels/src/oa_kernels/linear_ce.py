"""Fused linear + cross-entropy: ``cross_entropy(hidden @ weight.T, labels)`` without full-vocab logits.

Rows are processed in chunks: one chunk's logits are computed, turned in place into their gradient by
a Triton row kernel (online log-sum-exp, then ``softmax - onehot``), and multiplied back into the hidden
and weight gradients. With ``reduction='mean'|'sum'`` the gradients are made during the forward (three
matrix products per chunk, like the unfused version); with ``'none'`` (per-token losses for preference
and RL losses) the backward recomputes each chunk's logits, scaled per row by the incoming gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from oa_core.errors import OAError
from oa_kernels.runtime import use_triton

REDUCTIONS = ("mean", "sum", "none")
BLOCK_V = 4096
# Liger sizes a chunk's logits like the hidden states (1); 2 halves the passes over the LM head's weight
# and gradient for ~5% more peak memory than Liger (benchmarks/kernels.py --sweep)
CHUNK_LOGITS_VS_HIDDEN = 2


@triton.jit
def _ce_rows_kernel(logits_ptr, stride, labels_ptr, scale_ptr, loss_ptr, V, ignore_index,
                    COMPUTE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    ptr = logits_ptr + row * stride
    label = tl.load(labels_ptr + row).to(tl.int64)
    m = -float("inf")
    acc = 0.0
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(ptr + offs, mask=offs < V, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        acc = acc * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(acc)
    ignored = label == ignore_index
    target = tl.load(ptr + tl.where(ignored, 0, label)).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(ignored, 0.0, lse - target))
    if COMPUTE_GRAD:
        scale = tl.where(ignored, 0.0, tl.load(scale_ptr + row).to(tl.float32))
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            mask = offs < V
            x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = (tl.exp(x - lse) - (offs == label).to(tl.float32)) * scale
            tl.store(ptr + offs, g.to(logits_ptr.dtype.element_ty), mask=mask)


def _ce_rows(logits, labels, scale, ignore_index: int, compute_grad: bool) -> torch.Tensor:
    """Per-row losses of a (C, V) logits chunk; with ``compute_grad`` overwrite it with scale * dloss/dlogits."""
    loss = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    if use_triton(logits):
        _ce_rows_kernel[(logits.shape[0],)](logits, logits.stride(0), labels, scale, loss, logits.shape[1],
                                            ignore_index, COMPUTE_GRAD=compute_grad,
                                            BLOCK_V=min(BLOCK_V, triton.next_power_of_2(logits.shape[1])), num_warps=16)
        return loss
    x = logits.float()
    keep = labels != ignore_index
    safe = torch.where(keep, labels, 0)
    lse = x.logsumexp(-1)
    loss.copy_(torch.where(keep, lse - x.gather(1, safe[:, None])[:, 0], 0.0))
    if compute_grad:
        g = torch.softmax(x, -1)
        g[torch.arange(len(safe), device=g.device), safe] -= 1
        logits.copy_(g * torch.where(keep, scale, 0.0)[:, None])
    return loss


def _chunk_rows(n: int, hidden: int, vocab: int, chunk_size: int | None) -> int:
    """Rows per chunk: a chunk's logits about CHUNK_LOGITS_VS_HIDDEN times the size of the hidden states."""
    if chunk_size:
        return chunk_size
    return triton.next_power_of_2(triton.cdiv(n * CHUNK_LOGITS_VS_HIDDEN, triton.cdiv(vocab, hidden)))


def _pass(h, w, labels, scale, ignore_index, chunk, want_grad_h, want_grad_w, compute_grad=True):
    """One sweep over the row chunks; returns (per-row loss, grad_h, grad_w)."""
    loss = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if want_grad_h and compute_grad else None
    grad_w = torch.zeros_like(w) if want_grad_w and compute_grad else None
    buffer = torch.empty(min(chunk, h.shape[0]), w.shape[0], dtype=h.dtype, device=h.device)
    for start in range(0, h.shape[0], chunk):
        end = min(start + chunk, h.shape[0])
        h_c = h[start:end]
        logits = torch.mm(h_c, w.t(), out=buffer[: end - start])
        loss[start:end] = _ce_rows(logits, labels[start:end], scale[start:end], ignore_index, compute_grad)
        if grad_h is not None:
            torch.mm(logits, w, out=grad_h[start:end])
        if grad_w is not None:
            grad_w.addmm_(logits.t(), h_c)
    return loss, grad_h, grad_w


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, labels, ignore_index, reduction, chunk):
        n_valid = (labels != ignore_index).sum()
        ctx.reduction = reduction
        if reduction == "none":
            loss, _, _ = _pass(h, w, labels, labels, ignore_index, chunk, False, False, compute_grad=False)
            ctx.save_for_backward(h, w, labels)
            ctx.args = (ignore_index, chunk)
            return loss
        row_scale = 1.0 / n_valid.clamp(min=1).float() if reduction == "mean" else torch.ones((), device=h.device)
        scale = row_scale.expand(h.shape[0]).contiguous()
        loss, grad_h, grad_w = _pass(h, w, labels, scale, ignore_index, chunk, ctx.needs_input_grad[0],
                                     ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_h, grad_w)
        total = loss.sum()
        return total / n_valid if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.reduction == "none":
            h, w, labels = ctx.saved_tensors
            ignore_index, chunk = ctx.args
            scale = grad_out.float().contiguous()
            _, grad_h, grad_w = _pass(h, w, labels, scale, ignore_index, chunk, ctx.needs_input_grad[0],
                                      ctx.needs_input_grad[1])
        else:
            grad_h, grad_w = ctx.saved_tensors
            if grad_out.item() != 1.0:
                grad_h = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
                grad_w = grad_w * grad_out.to(grad_w.dtype) if grad_w is not None else None
        return grad_h, grad_w, None, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               ignore_index: int = -100, reduction: str = "mean",
                               chunk_size: int | None = None) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, labels, ...)`` (same loss and gradients), chunked over rows.

    ``hidden`` (..., H), ``weight`` (V, H), ``labels`` (...) of int indices; ``reduction`` 'mean' (over
    non-ignored tokens), 'sum', or 'none' (per-token losses, shape of ``labels``, 0 where ignored).
    """
    if reduction not in REDUCTIONS:
        raise OAError(f"fused_linear_cross_entropy: unknown reduction '{reduction}'", hint="use mean, sum or none")
    if hidden.shape[:-1] != labels.shape or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise OAError(f"fused_linear_cross_entropy: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)} and "
                      f"labels {tuple(labels.shape)} do not fit", hint="hidden (..., H), weight (V, H), labels (...)")
    h = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    w = weight.to(h.dtype) if weight.dtype != h.dtype else weight
    flat = labels.reshape(-1).contiguous()
    chunk = _chunk_rows(h.shape[0], h.shape[1], w.shape[0], chunk_size)
    if not (torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)):  # evaluation: no gradients made
        loss, _, _ = _pass(h, w, flat, flat, ignore_index, chunk, False, False, compute_grad=False)
        if reduction != "none":
            loss = loss.sum() / (flat != ignore_index).sum() if reduction == "mean" else loss.sum()
    else:
        loss = _FusedLinearCE.apply(h, w, flat, ignore_index, reduction, chunk)
    return loss.reshape(labels.shape) if reduction == "none" else loss
