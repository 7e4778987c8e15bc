"""Argument checks shared by the kernels (one-line OAErrors)."""

from __future__ import annotations

from oa_core.errors import OAError
from oa_kernels.reference import APPROXIMATIONS


def check_approximate(approximate: str) -> str:
    if approximate not in APPROXIMATIONS:
        raise OAError(f"unknown GELU approximation '{approximate}'", hint="use 'none' (exact, erf) or 'tanh'")
    return approximate


def check_same_shape(what: str, a, b) -> None:
    if a.shape != b.shape:
        raise OAError(f"{what}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})", hint="pass tensors of one shape")
