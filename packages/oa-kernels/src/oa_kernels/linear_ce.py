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
# Chunking. Liger sizes a chunk's logits like the hidden states: next_power_of_2(rows / ceil(V / H)) rows of
# the full vocabulary. Ours takes CHUNK_SCALE times as many rows and splits the vocabulary into VOCAB_PARTS
# parts, holding one part's logits at a time: logits memory CHUNK_SCALE / VOCAB_PARTS times Liger's. With
# parts > 1 a chunk's log-sum-exp needs every part first, so all parts but the last are computed twice.
# The best of a sweep on an H100 (benchmarks/kernels.py --sweep; docs/benchmarks.md).
CHUNK_SCALE = 2
VOCAB_PARTS = 1


@triton.jit
def _ce_rows_kernel(logits_ptr, stride, labels_ptr, scale_ptr, loss_ptr, lse_ptr, target_ptr, V, offset,
                    ignore_index, COMPUTE_LSE: tl.constexpr, COMPUTE_GRAD: tl.constexpr, WHOLE: tl.constexpr,
                    BLOCK_V: tl.constexpr):
    """One row of a (C, V) logits part whose first column is vocabulary entry ``offset``.

    WHOLE (the whole vocabulary in one part): loss to ``loss_ptr`` and, with COMPUTE_GRAD, logits replaced
    by ``scale * (softmax - onehot)``. Otherwise COMPUTE_LSE: the part's log-sum-exp to ``lse_ptr`` and,
    where the label falls in the part, its logit to ``target_ptr``; COMPUTE_GRAD: the gradient, with the
    full row's log-sum-exp read from ``lse_ptr``.
    """
    row = tl.program_id(0).to(tl.int64)
    ptr = logits_ptr + row * stride
    label = tl.load(labels_ptr + row).to(tl.int64)
    ignored = label == ignore_index
    local = label - offset
    if COMPUTE_LSE:
        m = -float("inf")
        acc = 0.0
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            x = tl.load(ptr + offs, mask=offs < V, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, 0))
            acc = acc * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
            m = m_new
        lse = m + tl.log(acc)
        inside = (local >= 0) & (local < V) & (~ignored)
        target = tl.load(ptr + tl.where(inside, local, 0)).to(tl.float32)
        if WHOLE:
            tl.store(loss_ptr + row, tl.where(ignored, 0.0, lse - target))
        else:
            tl.store(lse_ptr + row, lse)
            tl.store(target_ptr + row, target, mask=inside)
    else:
        lse = tl.load(lse_ptr + row)
    if COMPUTE_GRAD:
        scale = tl.where(ignored, 0.0, tl.load(scale_ptr + row).to(tl.float32))
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            mask = offs < V
            x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = (tl.exp(x - lse) - (offs == local).to(tl.float32)) * scale
            tl.store(ptr + offs, g.to(logits_ptr.dtype.element_ty), mask=mask)


def _ce_rows(logits, labels, scale, ignore_index: int, compute_grad: bool) -> torch.Tensor:
    """Per-row losses of a (C, V) logits chunk; with ``compute_grad`` overwrite it with scale * dloss/dlogits."""
    loss = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    if use_triton(logits):
        _launch_rows(logits, labels, scale, loss, loss, loss, 0, ignore_index, True, compute_grad, True)
        return loss
    x = logits.float()
    keep = labels != ignore_index
    safe = torch.where(keep, labels, 0)
    lse = x.logsumexp(-1)
    loss.copy_(torch.where(keep, lse - x.gather(1, safe[:, None])[:, 0], 0.0))
    if compute_grad:
        _grad_reference(logits, x, lse, labels, scale, ignore_index, 0)
    return loss


def _launch_rows(logits, labels, scale, loss, lse, target, offset, ignore_index, compute_lse, compute_grad,
                 whole=False):
    _ce_rows_kernel[(logits.shape[0],)](logits, logits.stride(0), labels, scale, loss, lse, target, logits.shape[1],
                                        offset, ignore_index, COMPUTE_LSE=compute_lse, COMPUTE_GRAD=compute_grad,
                                        WHOLE=whole, BLOCK_V=min(BLOCK_V, triton.next_power_of_2(logits.shape[1])), num_warps=16)


def _grad_reference(logits, x, lse, labels, scale, ignore_index, offset):
    """PyTorch version of the kernel's gradient: logits <- scale * (exp(x - lse) - onehot(label - offset))."""
    g = torch.exp(x - lse[:, None])
    local = labels - offset
    inside = (labels != ignore_index) & (local >= 0) & (local < x.shape[1])
    rows = torch.nonzero(inside)[:, 0]
    g[rows, local[rows]] -= 1
    logits.copy_(g * torch.where(labels != ignore_index, scale, 0.0)[:, None])


def _part_lse(logits, labels, offset, ignore_index, lse, target) -> None:
    """Log-sum-exp of one vocabulary part into ``lse``; the label's logit into ``target`` where it is in the part."""
    if use_triton(logits):
        _launch_rows(logits, labels, lse, lse, lse, target, offset, ignore_index, True, False)
        return
    x = logits.float()
    lse.copy_(x.logsumexp(-1))
    local = labels - offset
    inside = (labels != ignore_index) & (local >= 0) & (local < x.shape[1])
    target.copy_(torch.where(inside, x.gather(1, torch.where(inside, local, 0)[:, None])[:, 0], target))


def _part_grad(logits, labels, scale, lse, offset, ignore_index) -> None:
    """Overwrite one vocabulary part's logits with scale * (softmax - onehot), given the full rows' ``lse``."""
    if use_triton(logits):
        _launch_rows(logits, labels, scale, lse, lse, lse, offset, ignore_index, False, True)
        return
    _grad_reference(logits, logits.float(), lse, labels, scale, ignore_index, offset)


def _chunking(n: int, hidden: int, vocab: int, chunk_size: int | None, vocab_parts: int | None) -> tuple[int, int]:
    """(rows per chunk, vocabulary parts): CHUNK_SCALE times Liger's rows, VOCAB_PARTS parts (module docstring)."""
    parts = max(1, min(vocab_parts or VOCAB_PARTS, vocab))
    if chunk_size:
        return chunk_size, parts
    return CHUNK_SCALE * triton.next_power_of_2(triton.cdiv(n, triton.cdiv(vocab, hidden))), parts


def _backprop(g, h_c, w_part, grad_h_c, grad_w_part, first_part: bool, one_chunk: bool) -> None:
    """grad_h_c (= on the first part, else +=) g @ w_part; grad_w_part (= with one chunk, else +=) g.T @ h_c."""
    if grad_h_c is not None:
        if first_part:
            torch.mm(g, w_part, out=grad_h_c)
        else:
            grad_h_c.addmm_(g, w_part)
    if grad_w_part is not None:
        if one_chunk:
            torch.mm(g.t(), h_c, out=grad_w_part)
        else:
            grad_w_part.addmm_(g.t(), h_c)


def _pass(h, w, labels, scale, ignore_index, chunk, want_grad_h, want_grad_w, compute_grad=True, parts=1):
    """One sweep over the row chunks; returns (per-row loss, grad_h, grad_w)."""
    n, V = h.shape[0], w.shape[0]
    one_chunk = chunk >= n  # then each part of grad_w is written once, not accumulated
    loss = torch.empty(n, dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if want_grad_h and compute_grad else None
    grad_w = None
    if want_grad_w and compute_grad:
        grad_w = torch.empty_like(w) if one_chunk else torch.zeros_like(w)
    width = triton.cdiv(V, parts)
    bounds = [(p * width, min(V, (p + 1) * width)) for p in range(parts) if p * width < V]
    flat = torch.empty(min(chunk, n) * width, dtype=h.dtype, device=h.device)  # one part's logits
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        rows = end - start
        h_c, labels_c, scale_c = h[start:end], labels[start:end], scale[start:end]
        grad_h_c = grad_h[start:end] if grad_h is not None else None
        views = [flat[: rows * (v1 - v0)].view(rows, v1 - v0) for v0, v1 in bounds]
        if len(bounds) == 1:
            logits = torch.mm(h_c, w.t(), out=views[0])
            loss[start:end] = _ce_rows(logits, labels_c, scale_c, ignore_index, compute_grad)
            if compute_grad:
                _backprop(logits, h_c, w, grad_h_c, grad_w, True, one_chunk)
            continue
        lses = torch.empty(len(bounds), rows, dtype=torch.float32, device=h.device)
        target = torch.zeros(rows, dtype=torch.float32, device=h.device)
        for p, (v0, v1) in enumerate(bounds):
            _part_lse(torch.mm(h_c, w[v0:v1].t(), out=views[p]), labels_c, v0, ignore_index, lses[p], target)
        lse = torch.logsumexp(lses, 0)
        loss[start:end] = torch.where(labels_c == ignore_index, 0.0, lse - target)
        if not compute_grad:
            continue
        last = len(bounds) - 1
        for p in reversed(range(len(bounds))):  # the last part's logits are still in the buffer
            v0, v1 = bounds[p]
            if p != last:
                torch.mm(h_c, w[v0:v1].t(), out=views[p])
            _part_grad(views[p], labels_c, scale_c, lse, v0, ignore_index)
            grad_w_part = grad_w[v0:v1] if grad_w is not None else None
            _backprop(views[p], h_c, w[v0:v1], grad_h_c, grad_w_part, p == last, one_chunk)
    return loss, grad_h, grad_w


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, labels, ignore_index, reduction, chunk, parts):
        n_valid = (labels != ignore_index).sum()
        ctx.reduction = reduction
        if reduction == "none":
            loss, _, _ = _pass(h, w, labels, labels, ignore_index, chunk, False, False, compute_grad=False,
                               parts=parts)
            ctx.save_for_backward(h, w, labels)
            ctx.args = (ignore_index, chunk, parts)
            return loss
        row_scale = 1.0 / n_valid.clamp(min=1).float() if reduction == "mean" else torch.ones((), device=h.device)
        scale = row_scale.expand(h.shape[0]).contiguous()
        loss, grad_h, grad_w = _pass(h, w, labels, scale, ignore_index, chunk, ctx.needs_input_grad[0],
                                     ctx.needs_input_grad[1], parts=parts)
        ctx.save_for_backward(grad_h, grad_w)
        total = loss.sum()
        return total / n_valid if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.reduction == "none":
            h, w, labels = ctx.saved_tensors
            ignore_index, chunk, parts = ctx.args
            scale = grad_out.float().contiguous()
            _, grad_h, grad_w = _pass(h, w, labels, scale, ignore_index, chunk, ctx.needs_input_grad[0],
                                      ctx.needs_input_grad[1], parts=parts)
        else:
            grad_h, grad_w = ctx.saved_tensors
            if grad_out.item() != 1.0:
                grad_h = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
                grad_w = grad_w * grad_out.to(grad_w.dtype) if grad_w is not None else None
        return grad_h, grad_w, None, None, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               ignore_index: int = -100, reduction: str = "mean",
                               chunk_size: int | None = None, vocab_parts: int | None = None) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, labels, ...)`` (same loss and gradients), chunked over rows.

    ``hidden`` (..., H), ``weight`` (V, H), ``labels`` (...) of int indices; ``reduction`` 'mean' (over
    non-ignored tokens), 'sum', or 'none' (per-token losses, shape of ``labels``, 0 where ignored).
    ``chunk_size`` (rows) and ``vocab_parts`` override the chunking (CHUNK_SCALE, VOCAB_PARTS).
    """
    if reduction not in REDUCTIONS:
        raise OAError(f"fused_linear_cross_entropy: unknown reduction '{reduction}'", hint="use mean, sum or none")
    if hidden.shape[:-1] != labels.shape or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise OAError(f"fused_linear_cross_entropy: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)} and "
                      f"labels {tuple(labels.shape)} do not fit", hint="hidden (..., H), weight (V, H), labels (...)")
    h = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    w = weight.to(h.dtype) if weight.dtype != h.dtype else weight
    flat = labels.reshape(-1).contiguous()
    chunk, parts = _chunking(h.shape[0], h.shape[1], w.shape[0], chunk_size, vocab_parts)
    if not (torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)):  # evaluation: no gradients made
        loss, _, _ = _pass(h, w, flat, flat, ignore_index, chunk, False, False, compute_grad=False, parts=parts)
        if reduction != "none":
            loss = loss.sum() / (flat != ignore_index).sum() if reduction == "mean" else loss.sum()
    else:
        loss = _FusedLinearCE.apply(h, w, flat, ignore_index, reduction, chunk, parts)
    return loss.reshape(labels.shape) if reduction == "none" else loss
