"""Pure-PyTorch references of every kernel: the fallback (CPU, unsupported shapes) and the tests' oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F

APPROXIMATIONS = ("none", "tanh")


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    return F.gelu(x + bias, approximate=approximate)


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    return F.gelu(gate, approximate=approximate) * up


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's Llama RMSNorm: normalise in fp32, back to the input dtype, then scale by ``weight``."""
    hidden = x.float()
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
    return weight * hidden.to(x.dtype)


def rope_angles(position_ids: torch.Tensor, inv_freq: torch.Tensor, scaling: float = 1.0):
    """HF-style ``(cos, sin)`` of shape (B, S, rotary_dim) from positions (B, S) and inv_freq (rotary_dim/2)."""
    freqs = position_ids[..., None].float() * inv_freq.float()
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * scaling, emb.sin() * scaling


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """HF's ``apply_rotary_pos_emb`` for (B, H, S, D) q/k and (B, S, R) cos/sin, R <= D (partial rotary)."""

    def rotate(x):
        rot, rest = x[..., : cos.shape[-1]], x[..., cos.shape[-1]:]
        x1, x2 = rot.chunk(2, dim=-1)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        out = rot * c + torch.cat((-x2, x1), dim=-1) * s
        return torch.cat((out.to(x.dtype), rest), dim=-1)

    return rotate(q), rotate(k)


def linear_cross_entropy(hidden, weight, labels, ignore_index: int = -100, reduction: str = "mean"):
    """``cross_entropy(hidden @ weight.T, labels)`` with full logits (the unfused baseline)."""
    logits = F.linear(hidden.reshape(-1, hidden.shape[-1]), weight).float()
    return F.cross_entropy(logits, labels.reshape(-1), ignore_index=ignore_index, reduction=reduction)
