"""When to run a Triton kernel and when the PyTorch reference."""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def have_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``, used by the tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(*tensors) -> bool:
    """Triton for CUDA tensors (or CPU tensors under the interpreter); the reference otherwise, and inside a
    ``torch.compile`` region, where the compiler fuses the reference's operations itself (a hand-written kernel
    would split the graph: no whole-step CUDA graph, e.g. for compiled decoding)."""
    import torch

    if torch.compiler.is_compiling() or not have_triton() or not tensors:
        return False
    if interpreting():
        return all(t.device.type == "cpu" for t in tensors)
    return all(t.is_cuda for t in tensors)
