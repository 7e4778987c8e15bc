"""Startup self-test: a kernel against its reference on the model's real shapes, before it is swapped in."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from oa_core.errors import OAError
from oa_kernels.runtime import interpreting, use_triton
from oa_kernels.settings import KernelsSettings

log = logging.getLogger("oa_kernels")

# kernel name -> what runs it now ("triton", "reference (...)", "fallback (...)"), for the log line
ACTIVE: dict[str, str] = {}


def test_device(model) -> torch.device | None:
    """Where the kernels will run: the model's device if Triton can run there, else the GPU, else None."""
    param = next(model.parameters())
    if use_triton(param):
        return param.device
    if torch.cuda.is_available() and not interpreting():
        return torch.device("cuda")
    return None


def relative_error(got, want) -> float:
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got - want).abs().max() / want.abs().max().clamp(min=1e-12)).item()


def run_self_test(name: str, settings: KernelsSettings, device, check: Callable[[torch.device], float]) -> bool:
    """Run ``check(device) -> error`` and decide; returns True when the kernel may be swapped in."""
    if device is None:
        ACTIVE[name] = "reference (no GPU: the kernel falls back to PyTorch)"
        return True
    if not settings.self_test:
        ACTIVE[name] = "triton (self-test off)"
        return True
    try:
        err = check(device)
        reason = None if err <= settings.tolerance else f"error {err:.2e} > tolerance {settings.tolerance:g}"
    except OAError:
        raise
    except Exception as e:  # a kernel that fails to compile or launch must not stop training
        reason = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    if reason is None:
        ACTIVE[name] = "triton"
        return True
    if settings.on_failure == "error":
        raise OAError(f"kernels.{name}: self-test failed ({reason})",
                      hint=f"set kernels.on_failure: fallback, or kernels.{name}: false")
    ACTIVE[name] = f"fallback to the model's own code (self-test: {reason})"
    log.warning("oa-kernels: %s self-test failed (%s); keeping the model's own code", name, reason)
    return False


def log_active() -> str:
    line = "oa-kernels active: " + ", ".join(f"{k}={v}" for k, v in sorted(ACTIVE.items()))
    log.info(line)
    return line
