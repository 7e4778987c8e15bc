import pytest
import torch

from oa_core.errors import OAError
from oa_kernels import bias_gelu, geglu, gelu, reference
from oa_kernels.activations import GELU

DTYPES = [torch.float32, torch.bfloat16]
SHAPES = [(7, 33), (3, 5, 130), (4097,)]


def _inputs(shape, dtype, device, n):
    return [(torch.randn(shape, device=device) * 3).to(dtype).requires_grad_() for _ in range(n)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["gelu", "bias_gelu", "geglu"])
def test_forward_and_gradients_match_the_reference(op, shape, approximate, dtype, device, assert_close):
    (x, y) = _inputs(shape, dtype, device, 2)
    bias = (torch.randn(shape[-1], device=device)).to(dtype).requires_grad_()
    ours, ref, args = {
        "gelu": (gelu, reference.gelu, (x,)),
        "bias_gelu": (bias_gelu, reference.bias_gelu, (x, bias)),
        "geglu": (geglu, reference.geglu, (x, y)),
    }[op]
    out = ours(*args, approximate=approximate)
    assert out.dtype == dtype and out.shape == x.shape
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, args, grad)
    leaves = [a.detach().double().requires_grad_() for a in args]
    want = ref(*leaves, approximate=approximate)
    want_grads = torch.autograd.grad(want, leaves, grad.double())
    assert_close(out, want, dtype)
    for g, w in zip(grads, want_grads, strict=True):
        assert_close(g, w, dtype)


def test_erf_and_tanh_stay_distinct(device):
    x = torch.linspace(-4, 4, 801, device=device)
    exact, approx = gelu(x, "none"), gelu(x, "tanh")
    assert (exact - reference.gelu(x, "none")).abs().max() < 1e-6
    assert (approx - reference.gelu(x, "tanh")).abs().max() < 1e-6
    assert (exact - approx).abs().max() > 1e-4  # the two variants differ; the kernel keeps them apart


def test_module_keeps_its_variant(device):
    x = torch.randn(4, 8, device=device)
    assert torch.allclose(GELU("none")(x), torch.nn.functional.gelu(x), atol=1e-6)
    assert "tanh" in repr(GELU("tanh"))


def test_bad_arguments_raise_one_line_errors(device):
    x = torch.randn(2, 3, device=device)
    with pytest.raises(OAError, match="unknown GELU approximation 'fast'") as e:
        gelu(x, "fast")
    assert "\n" not in str(e.value) and e.value.hint
    with pytest.raises(OAError, match="shapes differ"):
        geglu(x, torch.randn(3, 2, device=device))


def test_unsupported_inputs_fall_back_to_the_reference(device):
    x = torch.randn(3, 6, device=device)
    bias = torch.randn(3, 6, device=device)  # not a last-dim bias: the reference broadcasts it
    assert torch.allclose(bias_gelu(x, bias), reference.bias_gelu(x, bias))
