"""Fused linear + cross-entropy: ``cross_entropy(hidden @ weight.T, labels)`` without full-vocab logits.

Logits are made a block at a time, turned in place into their gradient by a Triton row kernel (online
log-sum-exp, then ``softmax - onehot``) and multiplied back into the hidden and weight gradients. The
logits memory never exceeds Liger's (``next_power_of_2(rows / ceil(V / H))`` rows of the whole
vocabulary); two plans fit in it, and the cheaper one for the shapes is taken:

- **row chunks** of Liger's size, each over the whole vocabulary: three matrix products in all, but the
  weight gradient is read and written again for every chunk after the first;
- **vocabulary parts** over all rows at once: the weight gradient is written once per part, but a part's
  gradient needs the log-sum-exp over every part first, so the parts are computed twice. Not all of
  them: until the weight gradient is written it is free memory, and the first parts keep their logits
  at its end (``_kept_parts``), used before their own rows of the weight gradient are written.

With ``reduction='mean'|'sum'`` the gradients are made during the forward. With ``'none'`` (per-token
losses for the preference and RL losses) the forward keeps each row's log-sum-exp and the backward makes
the logits once more, scaled per row by the incoming gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from oa_core.errors import OAError
from oa_kernels.runtime import use_triton

REDUCTIONS = ("mean", "sum", "none")
BLOCK_V = 4096
# Matrix-product FLOPs per byte of memory traffic that cost the same time (H100 bf16: ~700 TFLOP/s over
# ~3 TB/s); weighs recomputed logits against re-read weight gradients when choosing the plan.
MACHINE_BALANCE = 230
PART_ALIGN = 128  # vocabulary part widths are multiples of this (tensor-core tiles)


@triton.jit
def _ce_rows_kernel(logits_ptr, stride, labels_ptr, scale_ptr, loss_ptr, lse_ptr, target_ptr, V, offset,
                    ignore_index, COMPUTE_LSE: tl.constexpr, COMPUTE_GRAD: tl.constexpr, WHOLE: tl.constexpr,
                    SPLIT_LABEL: tl.constexpr, BLOCK_V: tl.constexpr):
    """One row of a (C, V) logits part whose first column is vocabulary entry ``offset``.

    WHOLE (the whole vocabulary in one part): loss to ``loss_ptr``, log-sum-exp to ``lse_ptr`` and, with
    COMPUTE_GRAD, logits replaced by ``scale * (softmax - onehot)``. Otherwise COMPUTE_LSE: the part's
    log-sum-exp merged into the running one at ``lse_ptr`` and, where the label falls in the part, its
    logit to ``target_ptr``; COMPUTE_GRAD: the gradient, with the full row's log-sum-exp from ``lse_ptr``.
    SPLIT_LABEL (with COMPUTE_GRAD alone): the label's entry is left 0 and its gradient goes to ``target_ptr``.
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
            before = tl.load(lse_ptr + row)
            top = tl.maximum(before, lse)
            lse = top + tl.log(tl.exp(before - top) + tl.exp(lse - top))
            tl.store(target_ptr + row, target, mask=inside)
        tl.store(lse_ptr + row, lse)
    else:
        lse = tl.load(lse_ptr + row)
    if COMPUTE_GRAD:
        scale = tl.where(ignored, 0.0, tl.load(scale_ptr + row).to(tl.float32))
        if SPLIT_LABEL:
            inside = (local >= 0) & (local < V) & (~ignored)
            x_label = tl.load(ptr + tl.where(inside, local, 0)).to(tl.float32)
            tl.store(target_ptr + row, (tl.exp(x_label - lse) - 1.0) * scale, mask=inside)
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            mask = offs < V
            x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if SPLIT_LABEL:
                g = tl.where(offs == local, 0.0, tl.exp(x - lse)) * scale
            else:
                g = (tl.exp(x - lse) - (offs == local).to(tl.float32)) * scale
            tl.store(ptr + offs, g.to(logits_ptr.dtype.element_ty), mask=mask)


def _launch_rows(logits, labels, scale, loss, lse, target, offset, ignore_index, compute_lse, compute_grad,
                 whole=False, split_label=False):
    _ce_rows_kernel[(logits.shape[0],)](logits, logits.stride(0), labels, scale, loss, lse, target, logits.shape[1],
                                        offset, ignore_index, COMPUTE_LSE=compute_lse, COMPUTE_GRAD=compute_grad,
                                        WHOLE=whole, SPLIT_LABEL=split_label,
                                        BLOCK_V=min(BLOCK_V, triton.next_power_of_2(logits.shape[1])), num_warps=16)


def _whole_rows(logits, labels, scale, loss, lse, ignore_index: int, compute_grad: bool) -> None:
    """Loss and log-sum-exp of a (C, V) chunk's rows; with ``compute_grad`` overwrite it with scale * dloss/dlogits."""
    if use_triton(logits):
        _launch_rows(logits, labels, scale, loss, lse, lse, 0, ignore_index, True, compute_grad, whole=True)
        return
    x = logits.float()
    keep = labels != ignore_index
    lse.copy_(x.logsumexp(-1))
    loss.copy_(torch.where(keep, lse - x.gather(1, torch.where(keep, labels, 0)[:, None])[:, 0], 0.0))
    if compute_grad:
        _grad_reference(logits, x, lse, labels, scale, ignore_index, 0)


def _grad_reference(logits, x, lse, labels, scale, ignore_index, offset, label_grad=None):
    """PyTorch version of the kernel's gradient: logits <- scale * (exp(x - lse) - onehot(label - offset));
    with ``label_grad`` the label's entry goes there instead (SPLIT_LABEL)."""
    g = torch.exp(x - lse[:, None])
    scale = torch.where(labels != ignore_index, scale, 0.0)
    local = labels - offset
    inside = (labels != ignore_index) & (local >= 0) & (local < x.shape[1])
    rows = torch.nonzero(inside)[:, 0]
    if label_grad is None:
        g[rows, local[rows]] -= 1
    else:
        label_grad[rows] = (g[rows, local[rows]] - 1) * scale[rows]
        g[rows, local[rows]] = 0
    logits.copy_(g * scale[:, None])


def _part_lse(logits, labels, offset, ignore_index, lse, target) -> None:
    """Merge one vocabulary part's log-sum-exp into ``lse``; the label's logit into ``target`` where it is in the part."""
    if use_triton(logits):
        _launch_rows(logits, labels, lse, lse, lse, target, offset, ignore_index, True, False)
        return
    x = logits.float()
    lse.copy_(torch.logaddexp(lse, x.logsumexp(-1)))
    local = labels - offset
    inside = (labels != ignore_index) & (local >= 0) & (local < x.shape[1])
    target.copy_(torch.where(inside, x.gather(1, torch.where(inside, local, 0)[:, None])[:, 0], target))


def _part_grad(logits, labels, scale, lse, offset, ignore_index, label_grad=None) -> None:
    """Overwrite one vocabulary part's logits with scale * (softmax - onehot), given the full rows' ``lse``.

    With ``label_grad`` the labels' entries are left 0 and their gradients written there (``_put_labels``).
    """
    if use_triton(logits):
        target = lse if label_grad is None else label_grad
        _launch_rows(logits, labels, scale, lse, lse, target, offset, ignore_index, False, True,
                     split_label=label_grad is not None)
        return
    _grad_reference(logits, logits.float(), lse, labels, scale, ignore_index, offset, label_grad)


@triton.jit
def _put_labels_kernel(g_ptr, stride, labels_ptr, label_grad_ptr, n, V, offset, ignore_index, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    label = tl.load(labels_ptr + rows, mask=rows < n, other=ignore_index).to(tl.int64)
    local = label - offset
    inside = (rows < n) & (label != ignore_index) & (local >= 0) & (local < V)
    value = tl.load(label_grad_ptr + rows, mask=inside, other=0.0)
    tl.store(g_ptr + rows.to(tl.int64) * stride + local, value.to(g_ptr.dtype.element_ty), mask=inside)


def _put_labels(g, labels, offset, ignore_index, label_grad) -> None:
    """Write the labels' gradient entries (held back by ``_part_grad``) into a part's gradient ``g``."""
    if use_triton(g):
        n = g.shape[0]
        _put_labels_kernel[(triton.cdiv(n, 1024),)](g, g.stride(0), labels, label_grad, n, g.shape[1], offset,
                                                    ignore_index, BLOCK=1024)
        return
    local = labels - offset
    inside = (labels != ignore_index) & (local >= 0) & (local < g.shape[1])
    at = torch.where(inside, local, 0)[:, None]
    g.scatter_(1, at, torch.where(inside, label_grad.to(g.dtype), g.gather(1, at)[:, 0])[:, None])


def _add_label_rows(grad_h, w, labels, ignore_index, label_grad, rows_at_once: int) -> None:
    """grad_h += label_grad * w[label] per row, in float32 (the labels' share held back from the parts' sum)."""
    for start in range(0, grad_h.shape[0], rows_at_once):
        end = start + rows_at_once
        lab = labels[start:end]
        rows = w[torch.where(lab == ignore_index, 0, lab)].float().mul_(label_grad[start:end, None])
        grad_h[start:end] = rows.add_(grad_h[start:end].float())


def _kept_parts(parts: int, width: int, rows: int, hidden: int, vocab: int) -> int:
    """How many leading vocabulary parts can keep their logits in the weight gradient's storage.

    Parts ``0..k-1`` (``rows x width`` each) are packed against the end of the (vocab x hidden) buffer and
    used in order; part j's own gradient rows ``[j*width, (j+1)*width)`` are written when parts ``j..k-1``
    still occupy ``[end - (k-j)*rows*width, end)``. The condition is linear in j, so its ends decide.
    The last part is never kept (it stays in the shared buffer from the forward sweep).
    """
    def fits(k):
        return all((j + 1) * width * hidden + (k - j) * rows * width <= vocab * hidden for j in (0, k - 1))

    k = parts - 1
    while k > 0 and not fits(k):
        k -= 1
    return k


def _plan(n: int, hidden: int, vocab: int, itemsize: int, grad_w: bool, recompute: bool, chunk_size: int | None,
          vocab_parts: int | None) -> tuple[int, int]:
    """(rows per chunk, vocabulary part width) within Liger's logits memory; the cheaper plan (module docstring).

    ``recompute``: the gradient needs the parts' logits a second time (not so for reduction 'none', whose
    backward has the log-sum-exp from the forward).
    """
    liger_rows = triton.next_power_of_2(triton.cdiv(n, triton.cdiv(vocab, hidden)))
    if chunk_size or vocab_parts:
        return chunk_size or liger_rows, triton.cdiv(vocab, max(1, min(vocab_parts or 1, vocab)))
    if not grad_w or n <= liger_rows:  # no weight gradient to re-read, or one chunk holds every row
        return liger_rows, vocab
    width = max(PART_ALIGN, liger_rows * vocab // n // PART_ALIGN * PART_ALIGN)
    parts = triton.cdiv(vocab, width)
    recomputed = parts - 1 - _kept_parts(parts, width, n, hidden, vocab) if recompute else 0
    parts_cost = 2 * n * width * hidden * recomputed / MACHINE_BALANCE + parts * 2 * n * hidden * itemsize
    rows_cost = (triton.cdiv(n, liger_rows) - 1) * 2 * vocab * hidden * itemsize
    return (n, width) if parts_cost < rows_cost else (liger_rows, vocab)


def _pass(h, w, labels, scale, ignore_index, rows_per_chunk, width, want_grad_h, want_grad_w, compute_grad=True,
          lse=None):
    """One sweep over the row chunks; returns (per-row loss, per-row log-sum-exp, grad_h, grad_w).

    With ``lse`` given (the backward of reduction 'none') the loss is not made again and each part's
    logits are computed once, straight into their gradient. With several vocabulary parts grad_h is a
    sum over parts, rounded to the input dtype after each; the labels' entries (the one large term of a
    row's gradient) are held out of that sum and added at the end in float32, so the rounding is relative
    to the rest of the row's gradient, as small as the row's gradient itself.
    """
    n, V = h.shape[0], w.shape[0]
    one_chunk = rows_per_chunk >= n  # then each part of grad_w is written once, not accumulated
    loss = torch.empty(n, dtype=torch.float32, device=h.device)
    given = lse is not None
    lse = lse if given else torch.full((n,), -float("inf"), dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if want_grad_h and compute_grad else None
    grad_w = None
    if want_grad_w and compute_grad:
        grad_w = (torch.empty if one_chunk else torch.zeros)(w.shape, dtype=w.dtype, device=w.device)
    bounds = [(v0, min(V, v0 + width)) for v0 in range(0, V, width)]
    kept = 0 if grad_w is None or not one_chunk or given else _kept_parts(len(bounds), width, n, h.shape[1], V)
    label_grad = torch.zeros(n, dtype=torch.float32, device=h.device) if grad_h is not None and bounds[1:] else None
    shared = torch.empty(min(rows_per_chunk, n) * min(width, V), dtype=h.dtype, device=h.device)  # one part's logits
    sweep = _ChunkSweep(w, grad_w, bounds, kept, ignore_index, one_chunk, shared)
    for start in range(0, n, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, n))
        sweep.run(h[rows], labels[rows], scale[rows], lse[rows], loss[rows],
                  grad_h[rows] if grad_h is not None else None,
                  label_grad[rows] if label_grad is not None else None, compute_grad, given)
    if label_grad is not None:
        rows_at_once = max(1, shared.numel() // (5 * h.shape[1]))  # its float32 temporaries fit in the freed buffer
        del sweep, shared
        _add_label_rows(grad_h, w, labels, ignore_index, label_grad, rows_at_once)
    return loss, lse, grad_h, grad_w


class _ChunkSweep:
    """The vocabulary parts of one row chunk: logits, log-sum-exp, gradient, products (module docstring)."""

    def __init__(self, w, grad_w, bounds, kept, ignore_index, one_chunk, shared):
        self.w, self.grad_w, self.bounds, self.kept = w, grad_w, bounds, kept
        self.ignore_index, self.one_chunk, self.shared = ignore_index, one_chunk, shared

    def logits(self, h_c, p, compute=True):
        """Part p's logits buffer (in grad_w's storage for kept parts, else the shared one), filled if ``compute``."""
        (v0, v1), rows = self.bounds[p], h_c.shape[0]
        if p < self.kept:  # packed against the end of grad_w (see _kept_parts)
            width = v1 - v0
            at = self.grad_w.numel() - (self.kept - p) * rows * width
            out = self.grad_w.view(-1)[at: at + rows * width].view(rows, width)
        else:
            out = self.shared[: rows * (v1 - v0)].view(rows, v1 - v0)
        return torch.mm(h_c, self.w[v0:v1].t(), out=out) if compute else out

    def backprop(self, g, p, first, h_c, labels_c, grad_h_c, label_grad_c):
        """grad_h_c (= on the first part, else +=) g @ w_part; grad_w_part (= with one chunk, else +=) g.T @ h_c."""
        v0, v1 = self.bounds[p]
        if grad_h_c is not None:
            if first:
                torch.mm(g, self.w[v0:v1], out=grad_h_c)
            else:
                grad_h_c.addmm_(g, self.w[v0:v1])
        if self.grad_w is None:
            return
        if label_grad_c is not None:
            _put_labels(g, labels_c, v0, self.ignore_index, label_grad_c)
        if self.one_chunk:
            torch.mm(g.t(), h_c, out=self.grad_w[v0:v1])
        else:
            self.grad_w[v0:v1].addmm_(g.t(), h_c)

    def run(self, h_c, labels_c, scale_c, lse_c, loss_c, grad_h_c, label_grad_c, compute_grad, given):
        last = len(self.bounds) - 1
        if last == 0 and not given:
            g = self.logits(h_c, 0)
            _whole_rows(g, labels_c, scale_c, loss_c, lse_c, self.ignore_index, compute_grad)
            if compute_grad:
                self.backprop(g, 0, True, h_c, labels_c, grad_h_c, None)
            return
        if given:
            order = range(last + 1)
        else:
            target = torch.zeros(h_c.shape[0], dtype=torch.float32, device=h_c.device)
            for p, (v0, _) in enumerate(self.bounds):
                _part_lse(self.logits(h_c, p), labels_c, v0, self.ignore_index, lse_c, target)
            loss_c.copy_(torch.where(labels_c == self.ignore_index, 0.0, lse_c - target))
            if not compute_grad:
                return
            # kept parts first (they free grad_w's storage), then the last (still in the shared buffer), then the rest
            order = [*range(self.kept), last, *range(self.kept, last)]
        for i, p in enumerate(order):
            g = self.logits(h_c, p, compute=given or self.kept <= p < last)
            _part_grad(g, labels_c, scale_c, lse_c, self.bounds[p][0], self.ignore_index, label_grad_c)
            self.backprop(g, p, i == 0, h_c, labels_c, grad_h_c, label_grad_c)


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, labels, ignore_index, reduction, rows_per_chunk, width):
        n_valid = (labels != ignore_index).sum()
        ctx.reduction = reduction
        plan = (rows_per_chunk, width)
        if reduction == "none":
            loss, lse, _, _ = _pass(h, w, labels, labels, ignore_index, *plan, False, False, compute_grad=False)
            ctx.save_for_backward(h, w, labels, lse)
            ctx.args = (ignore_index, plan)
            return loss
        row_scale = 1.0 / n_valid.clamp(min=1).float() if reduction == "mean" else torch.ones((), device=h.device)
        scale = row_scale.expand(h.shape[0]).contiguous()
        loss, _, grad_h, grad_w = _pass(h, w, labels, scale, ignore_index, *plan, ctx.needs_input_grad[0],
                                        ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_h, grad_w)
        total = loss.sum()
        return total / n_valid if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.reduction == "none":
            h, w, labels, lse = ctx.saved_tensors
            ignore_index, plan = ctx.args
            _, _, grad_h, grad_w = _pass(h, w, labels, grad_out.float().contiguous(), ignore_index, *plan,
                                         ctx.needs_input_grad[0], ctx.needs_input_grad[1], lse=lse)
        else:
            grad_h, grad_w = ctx.saved_tensors
            if grad_out.item() != 1.0:
                grad_h = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
                grad_w = grad_w * grad_out.to(grad_w.dtype) if grad_w is not None else None
        return grad_h, grad_w, None, None, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               ignore_index: int = -100, reduction: str = "mean",
                               chunk_size: int | None = None, vocab_parts: int | None = None) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, labels, ...)`` (same loss and gradients) without full-vocab logits.

    ``hidden`` (..., H), ``weight`` (V, H), ``labels`` (...) of int indices; ``reduction`` 'mean' (over
    non-ignored tokens), 'sum', or 'none' (per-token losses, shape of ``labels``, 0 where ignored).
    ``chunk_size`` (rows) and ``vocab_parts`` replace the automatic plan (module docstring).
    """
    if reduction not in REDUCTIONS:
        raise OAError(f"fused_linear_cross_entropy: unknown reduction '{reduction}'", hint="use mean, sum or none")
    if hidden.shape[:-1] != labels.shape or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise OAError(f"fused_linear_cross_entropy: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)} and "
                      f"labels {tuple(labels.shape)} do not fit", hint="hidden (..., H), weight (V, H), labels (...)")
    h = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    w = weight.to(h.dtype) if weight.dtype != h.dtype else weight
    flat = labels.reshape(-1).contiguous()
    training = torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)
    plan = _plan(h.shape[0], h.shape[1], w.shape[0], h.element_size(), training and w.requires_grad,
                 reduction != "none", chunk_size, vocab_parts)
    if not training:  # evaluation: no gradients made
        loss = _pass(h, w, flat, flat, ignore_index, *plan, False, False, compute_grad=False)[0]
        if reduction != "none":
            loss = loss.sum() / (flat != ignore_index).sum() if reduction == "mean" else loss.sum()
    else:
        loss = _FusedLinearCE.apply(h, w, flat, ignore_index, reduction, *plan)
    return loss.reshape(labels.shape) if reduction == "none" else loss
