"""Triton kernels for oa: GELU/GeGLU, SwiGLU, RMSNorm, RoPE and fused linear cross-entropy, with PyTorch
fallbacks.

Importing this package loads no torch; the functions below load their module on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "gelu": "oa_kernels.activations",
    "bias_gelu": "oa_kernels.activations",
    "geglu": "oa_kernels.activations",
    "GELU": "oa_kernels.activations",
    "swiglu": "oa_kernels.activations",
    "rms_norm": "oa_kernels.rmsnorm",
    "RMSNorm": "oa_kernels.rmsnorm",
    "apply_rope": "oa_kernels.rope",
    "fused_linear_cross_entropy": "oa_kernels.linear_ce",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'oa_kernels' has no attribute {name!r}")
