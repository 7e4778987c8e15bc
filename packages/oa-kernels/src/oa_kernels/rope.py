"""Rotary position embedding for q and k in one launch (forward and backward).

Works on any (B, H, S, D) strides with a unit last stride: HF's layout ((B, S, H, D) storage viewed as
(B, H, S, D)) and contiguous (B, H, S, D) alike, without copies. cos/sin come either from HF's tables
(B or 1, S, R) or are computed in-kernel from ``position_ids`` and ``inv_freq`` (packed sequences, nothing
materialised). Partial rotary (R < D) and odd head dims are supported; the tail ``[R:D]`` passes through.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from oa_core.errors import OAError
from oa_kernels import reference
from oa_kernels.runtime import use_triton

# Launch settings per (layout, backward): tokens per program, heads per step, warps. "hf" is HF's
# (B, S, H, D) storage viewed as (B, H, S, D) (heads inner), "contiguous" is (B, H, S, D). The best of a
# sweep of forward and backward launches on an H100 (benchmarks/kernels.py --sweep; docs/benchmarks.md).
SETTINGS: dict[tuple[str, bool], tuple[int, int, int]] = {
    ("hf", False): (1, 16, 8),
    ("hf", True): (1, 16, 8),
    ("contiguous", False): (2, 8, 8),
    ("contiguous", True): (2, 8, 8),
}


@triton.jit
def _rotate_heads(x_ptr, o_ptr, x_sb, x_sh, x_ss, o_sb, o_sh, o_ss, b, H, s, s_mask, cos, sin,
                  HALF: tl.constexpr, HALF_P: tl.constexpr, D: tl.constexpr, REST_P: tl.constexpr,
                  COPY_REST: tl.constexpr, GROUP: tl.constexpr):
    """Rotate all H heads of tokens ``s`` of batch ``b``, GROUP heads per step (all loads before stores)."""
    g = tl.arange(0, GROUP)[:, None, None]
    d = tl.arange(0, HALF_P)[None, None, :]
    s3 = s[None, :, None]
    base_mask = s_mask[None, :, None] & (d < HALF)
    x_row = x_ptr + b * x_sb + s3 * x_ss + d
    o_row = o_ptr + b * o_sb + s3 * o_ss + d
    c, sn = cos[None, :, :], sin[None, :, :]
    for h0 in range(0, H, GROUP):
        h = h0 + g
        mask = base_mask & (h < H)
        x1 = tl.load(x_row + h * x_sh, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_row + h * x_sh + HALF, mask=mask, other=0.0).to(tl.float32)
        tl.store(o_row + h * o_sh, (x1 * c - x2 * sn).to(o_ptr.dtype.element_ty), mask=mask)
        tl.store(o_row + h * o_sh + HALF, (x2 * c + x1 * sn).to(o_ptr.dtype.element_ty), mask=mask)
    if COPY_REST:
        r = 2 * HALF + tl.arange(0, REST_P)[None, None, :]
        for h0 in range(0, H, GROUP):
            h = h0 + g
            rmask = s_mask[None, :, None] & (r < D) & (h < H)
            rest = tl.load(x_ptr + b * x_sb + h * x_sh + s3 * x_ss + r, mask=rmask, other=0.0)
            tl.store(o_ptr + b * o_sb + h * o_sh + s3 * o_ss + r, rest, mask=rmask)


@triton.jit
def _rope_kernel(q_ptr, k_ptr, qo_ptr, ko_ptr, cos_ptr, sin_ptr, pos_ptr, freq_ptr,
                 S, HQ, HK,
                 q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, qo_sb, qo_sh, qo_ss, ko_sb, ko_sh, ko_ss,
                 cs_sb, cs_ss, pos_sb, pos_ss, scaling,
                 HALF: tl.constexpr, HALF_P: tl.constexpr, D: tl.constexpr, REST_P: tl.constexpr,
                 BLOCK_S: tl.constexpr, FROM_POSITIONS: tl.constexpr, BACKWARD: tl.constexpr,
                 COPY_REST: tl.constexpr, GROUP: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    s = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    s_mask = s < S
    s = s.to(tl.int64)
    d = tl.arange(0, HALF_P)
    cs_mask = s_mask[:, None] & (d < HALF)[None, :]
    if FROM_POSITIONS:
        pos = tl.load(pos_ptr + b * pos_sb + s * pos_ss, mask=s_mask, other=0).to(tl.float32)
        freq = tl.load(freq_ptr + d, mask=d < HALF, other=0.0).to(tl.float32)
        angle = pos[:, None] * freq[None, :]
        cos = tl.cos(angle) * scaling
        sin = tl.sin(angle) * scaling
    else:
        off = b * cs_sb + s[:, None] * cs_ss + d[None, :]
        cos = tl.load(cos_ptr + off, mask=cs_mask, other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + off, mask=cs_mask, other=0.0).to(tl.float32)
    if BACKWARD:
        sin = -sin
    _rotate_heads(q_ptr, qo_ptr, q_sb, q_sh, q_ss, qo_sb, qo_sh, qo_ss, b, HQ, s, s_mask, cos, sin,
                  HALF, HALF_P, D, REST_P, COPY_REST, GROUP)
    _rotate_heads(k_ptr, ko_ptr, k_sb, k_sh, k_ss, ko_sb, ko_sh, ko_ss, b, HK, s, s_mask, cos, sin,
                  HALF, HALF_P, D, REST_P, COPY_REST, GROUP)


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def layout(q: torch.Tensor) -> str:
    """"hf" when heads are the inner dimension of the storage ((B, S, H, D) viewed as (B, H, S, D)), else "contiguous"."""
    return "hf" if q.stride(1) < q.stride(2) else "contiguous"


def _launch(q, k, qo, ko, angles, backward: bool, settings=None) -> None:
    """Rotate q/k (B, H, S, D) into qo/ko; ``angles`` is ("table", cos, sin) or ("positions", pos, freq, scale)."""
    B, HQ, S, D = q.shape
    block_s, group, num_warps = settings or SETTINGS[(layout(q), backward)]
    HK = k.shape[1]
    if angles[0] == "table":
        _, cos, sin = angles
        half = cos.shape[-1] // 2
        cs_sb = cos.stride(0) if cos.shape[0] > 1 else 0
        args = (cos, sin, cos, cos, cs_sb, cos.stride(1), 0, 0, 1.0)
    else:
        _, pos, freq, scale = angles
        half = freq.shape[0]
        pos_sb = pos.stride(0) if pos.shape[0] > 1 else 0
        args = (q, q, pos, freq, 0, 0, pos_sb, pos.stride(1), float(scale))
    cos_t, sin_t, pos_t, freq_t, cs_sb, cs_ss, pos_sb, pos_ss, scale = args
    rest = D - 2 * half
    copy_rest = rest > 0 and qo.data_ptr() != q.data_ptr()
    grid = (triton.cdiv(S, block_s), B)
    _rope_kernel[grid](
        q, k, qo, ko, cos_t, sin_t, pos_t, freq_t, S, HQ, HK,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        qo.stride(0), qo.stride(1), qo.stride(2), ko.stride(0), ko.stride(1), ko.stride(2),
        cs_sb, cs_ss, pos_sb, pos_ss, scale,
        HALF=half, HALF_P=triton.next_power_of_2(half), D=D, REST_P=triton.next_power_of_2(max(rest, 1)),
        BLOCK_S=block_s, GROUP=group, FROM_POSITIONS=angles[0] == "positions", BACKWARD=backward,
        COPY_REST=copy_rest, num_warps=num_warps,
    )


class _RopeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, inplace, kind, *angle_tensors):
        q, k = _unit_last(q), _unit_last(k)
        angles = (kind, *angle_tensors)
        qo, ko = (q, k) if inplace else (torch.empty_like(q), torch.empty_like(k))
        _launch(q, k, qo, ko, angles, backward=False)
        if inplace:
            ctx.mark_dirty(q, k)
        ctx.angles = angles
        return qo, ko

    @staticmethod
    def backward(ctx, dq, dk):
        dq, dk = _unit_last(dq), _unit_last(dk)
        dqo, dko = torch.empty_like(dq), torch.empty_like(dk)
        _launch(dq, dk, dqo, dko, ctx.angles, backward=True)
        return (dqo, dko, None, None) + (None,) * len(ctx.angles[1:])


def _check(q, k, rotary_dim: int) -> None:
    if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise OAError(f"rope: q {tuple(q.shape)} and k {tuple(k.shape)} must be (B, H, S, D) with equal B, S, D",
                      hint="pass q/k as HF attention does, (batch, heads, seq, head_dim)")
    if rotary_dim % 2 or rotary_dim > q.shape[-1] or rotary_dim == 0:
        raise OAError(f"rope: rotary dim {rotary_dim} must be even, positive and at most head_dim {q.shape[-1]}",
                      hint="cos/sin's last dim (or 2*len(inv_freq)) is the rotary dim")


def apply_rope(q, k, cos=None, sin=None, *, position_ids=None, inv_freq=None, scaling: float = 1.0,
               inplace: bool | None = None):
    """Rotate q (B, Hq, S, D) and k (B, Hk, S, D) like HF's ``apply_rotary_pos_emb``.

    Give either ``cos``/``sin`` (B or 1, S, R) or ``position_ids`` (B or 1, S) with ``inv_freq`` (R/2,)
    and the rope type's ``scaling`` (attention_scaling): then cos/sin are computed in the kernel.
    ``inplace`` (default: when no gradient is needed) rotates q and k in their own storage.
    """
    by_positions = position_ids is not None
    if by_positions == (cos is not None):
        raise OAError("rope: give either cos/sin or position_ids with inv_freq",
                      hint="apply_rope(q, k, cos, sin) or apply_rope(q, k, position_ids=..., inv_freq=...)")
    if by_positions:
        if inv_freq is None:
            raise OAError("rope: position_ids needs inv_freq", hint="pass the model's rotary_emb.inv_freq")
        rotary_dim = 2 * inv_freq.shape[-1]
    else:
        rotary_dim = cos.shape[-1]
        cos, sin = (c.unsqueeze(0) if c.dim() == 2 else c for c in (cos, sin))
    _check(q, k, rotary_dim)
    tensors = (q, k, *((position_ids, inv_freq) if by_positions else (cos, sin)))
    if not use_triton(*tensors):
        if by_positions:
            cos, sin = reference.rope_angles(position_ids, inv_freq, scaling)
        return reference.rope(q, k, cos, sin)
    if inplace is None:
        inplace = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))
    if by_positions:
        angles = ("positions", position_ids, inv_freq.float(), scaling)
    else:
        angles = ("table", _unit_last(cos), _unit_last(sin))
    return _RopeFunction.apply(q, k, inplace, *angles)


def hf_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1, **_):
    """Drop-in for ``transformers.models.*.modeling_*.apply_rotary_pos_emb`` (in place only when no gradient is needed)."""
    if unsqueeze_dim == 2:
        qo, ko = apply_rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        return qo.transpose(1, 2), ko.transpose(1, 2)
    return apply_rope(q, k, cos, sin)
