"""Run the Triton kernels through Triton's CPU interpreter when there is no GPU (set before triton loads)."""

import os

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def device():
    return "cuda" if _has_cuda() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)


# max |got - want| / max |want| against a float64 reference
TOLERANCE = {"torch.float32": 1e-5, "torch.bfloat16": 2e-2}


@pytest.fixture
def assert_close():
    from oa_kernels.selftest import relative_error

    def check(got, want, dtype) -> None:
        err = relative_error(got, want)
        assert err <= TOLERANCE[str(dtype)], f"relative error {err:.2e} > {TOLERANCE[str(dtype)]:.0e}"

    return check
