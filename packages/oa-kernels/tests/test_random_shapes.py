"""Random shapes (hypothesis) for each kernel: forward and gradients against the float64 reference."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oa_kernels import apply_rope, fused_linear_cross_entropy, geglu, reference

# assert_close is a stateless function fixture
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([torch.float32, torch.bfloat16])


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


@FEW
@given(rows=st.integers(1, 9), cols=st.integers(1, 300), approximate=st.sampled_from(["none", "tanh"]), dtype=DTYPES,
       seed=st.integers(0, 2**16))
def test_geglu_random_shapes(rows, cols, approximate, dtype, seed, assert_close):
    torch.manual_seed(seed)
    a, b = ((torch.randn(rows, cols) * 3).to(dtype).requires_grad_() for _ in range(2))
    out = geglu(a, b, approximate)
    grad = torch.randn_like(out)
    a64, b64 = (t.detach().double().requires_grad_() for t in (a, b))
    want = reference.geglu(a64, b64, approximate)
    got_all = (out, *_grads(out, (a, b), grad))
    for got, ref in zip(got_all, (want, *_grads(want, (a64, b64), grad.double())), strict=True):
        assert_close(got, ref, dtype)


@FEW
@given(B=st.integers(1, 2), hq=st.integers(1, 5), group=st.integers(1, 3), S=st.integers(1, 6),
       half=st.integers(1, 6), extra=st.integers(0, 3), hf=st.booleans(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_rope_random_shapes(B, hq, group, S, half, extra, hf, dtype, seed, assert_close):
    torch.manual_seed(seed)
    hk, D, R = max(1, hq // group), 2 * half + extra, 2 * half

    def make(h):
        x = torch.randn(B, S, h, D) if hf else torch.randn(B, h, S, D)
        return (x.transpose(1, 2) if hf else x).to(dtype).requires_grad_()

    q, k = make(hq), make(hk)
    pos = torch.randint(0, 100, (B, S))
    inv_freq = 1.0 / (10000 ** (torch.arange(0, R, 2).float() / R))
    out = apply_rope(q, k, position_ids=pos, inv_freq=inv_freq)
    gq, gk = torch.randn_like(out[0]), torch.randn_like(out[1])
    grads = _grads(out, (q, k), (gq, gk))
    q64, k64 = (t.detach().double().requires_grad_() for t in (q, k))
    cos, sin = reference.rope_angles(pos, inv_freq)
    want = reference.rope(q64, k64, cos.double(), sin.double())
    want_grads = _grads(want, (q64, k64), (gq.double(), gk.double()))
    for got, ref in zip((*out, *grads), (*want, *want_grads), strict=True):
        assert_close(got, ref, dtype)


@FEW
@given(n=st.integers(1, 12), H=st.integers(1, 20), V=st.integers(2, 70), chunk=st.integers(1, 8), dtype=DTYPES,
       seed=st.integers(0, 2**16), parts=st.integers(1, 4))
def test_fused_linear_ce_random_shapes(n, H, V, chunk, dtype, seed, parts, assert_close):
    torch.manual_seed(seed)
    h = torch.randn(n, H).to(dtype).requires_grad_()
    w = (torch.randn(V, H) * H**-0.5).to(dtype).requires_grad_()
    labels = torch.randint(0, V, (n,))
    labels[0] = -100
    labels[-1] = V - 1
    loss = fused_linear_cross_entropy(h, w, labels, reduction="sum", chunk_size=chunk, vocab_parts=parts)
    h64, w64 = (t.detach().double().requires_grad_() for t in (h, w))
    want = reference.linear_cross_entropy(h64, w64, labels, reduction="sum")
    assert_close(loss, want, torch.float32 if dtype == torch.float32 else dtype)
    for got, ref in zip(_grads(loss, (h, w), None), _grads(want, (h64, w64), None), strict=True):
        assert_close(got, ref, dtype)
