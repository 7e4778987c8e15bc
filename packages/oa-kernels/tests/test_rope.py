import pytest
import torch

from oa_core.errors import OAError
from oa_kernels import apply_rope, reference
from oa_kernels.rope import hf_apply_rotary_pos_emb

# (B, Hq, Hk, S, D, rotary dim): GQA, partial rotary, odd head dims, a single token
CASES = [(2, 4, 2, 5, 8, 8), (1, 3, 1, 7, 9, 6), (2, 8, 8, 3, 16, 16), (1, 2, 2, 1, 7, 4), (3, 5, 1, 4, 12, 8)]


def _qk(B, Hq, Hk, S, D, layout, dtype, device):
    def one(h):
        if layout == "hf":  # HF attention: (B, S, H, D) storage viewed as (B, H, S, D)
            return torch.randn(B, S, h, D, device=device, dtype=dtype).transpose(1, 2).requires_grad_()
        return torch.randn(B, h, S, D, device=device, dtype=dtype).requires_grad_()

    return one(Hq), one(Hk)


def _angles(B, S, R, device, packed=False):
    pos = torch.randint(0, 4096, (B, S), device=device)
    if packed:  # several sequences in one row: positions restart
        pos = torch.cat([torch.arange(S // 2 + 1), torch.arange(S - S // 2 - 1)]).to(device)[None].expand(B, S)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, R, 2, device=device).float() / R))
    return pos, inv_freq


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["hf", "contiguous"])
@pytest.mark.parametrize("mode", ["table", "positions"])
@pytest.mark.parametrize("case", CASES)
def test_rope_matches_reference_with_gradients(case, mode, layout, dtype, device, assert_close):
    B, Hq, Hk, S, D, R = case
    q, k = _qk(B, Hq, Hk, S, D, layout, dtype, device)
    pos, inv_freq = _angles(B, S, R, device, packed=mode == "positions")
    cos, sin = reference.rope_angles(pos, inv_freq, scaling=0.8)
    if mode == "table":
        qo, ko = apply_rope(q, k, cos.to(dtype), sin.to(dtype))
    else:
        qo, ko = apply_rope(q, k, position_ids=pos, inv_freq=inv_freq, scaling=0.8)
    assert qo.shape == q.shape and ko.shape == k.shape and qo.dtype == dtype
    gq, gk = torch.randn_like(qo), torch.randn_like(ko)
    grads = torch.autograd.grad((qo, ko), (q, k), (gq, gk))
    q64, k64 = (t.detach().double().requires_grad_() for t in (q, k))
    want = reference.rope(q64, k64, cos.double(), sin.double())
    want_grads = torch.autograd.grad(want, (q64, k64), (gq.double(), gk.double()))
    for got, ref in zip((qo, ko, *grads), (*want, *want_grads), strict=True):
        assert_close(got, ref, dtype)
    if R < D:  # the pass-through tail is copied unchanged
        assert torch.equal(qo[..., R:], q[..., R:])


def test_inplace_without_grad_rotates_the_given_storage(device):
    q, k = (t.detach() for t in _qk(2, 4, 2, 6, 8, "hf", torch.float32, device))
    pos, inv_freq = _angles(2, 6, 8, device)
    want = reference.rope(q, k, *reference.rope_angles(pos, inv_freq))
    with torch.no_grad():
        qo, ko = apply_rope(q, k, position_ids=pos, inv_freq=inv_freq)
    assert qo.data_ptr() == q.data_ptr() and ko.data_ptr() == k.data_ptr()
    assert torch.allclose(q, want[0], atol=1e-5) and torch.allclose(k, want[1], atol=1e-5)


def test_with_grad_inputs_are_left_alone(device):
    q, k = _qk(1, 2, 2, 4, 8, "contiguous", torch.float32, device)
    before = q.detach().clone()
    pos, inv_freq = _angles(1, 4, 8, device)
    apply_rope(q, k, position_ids=pos, inv_freq=inv_freq)
    assert torch.equal(q.detach(), before)


def test_hf_drop_in_with_unsqueeze_dim_2(device):
    B, S, H, D = 2, 5, 3, 8
    q, k = (torch.randn(B, S, H, D, device=device) for _ in range(2))  # (B, S, H, D) as given with dim 2
    cos, sin = reference.rope_angles(*_angles(B, S, D, device))
    qo, ko = hf_apply_rotary_pos_emb(q.clone(), k.clone(), cos, sin, unsqueeze_dim=2)
    want = reference.rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    assert torch.allclose(qo, want[0].transpose(1, 2), atol=1e-5)
    assert torch.allclose(ko, want[1].transpose(1, 2), atol=1e-5)


def test_bad_arguments_raise_one_line_errors(device):
    q, k = (t.detach() for t in _qk(1, 2, 2, 4, 8, "contiguous", torch.float32, device))
    cos, sin = reference.rope_angles(*_angles(1, 4, 8, device))
    with pytest.raises(OAError, match="either cos/sin or position_ids"):
        apply_rope(q, k)
    with pytest.raises(OAError, match="needs inv_freq"):
        apply_rope(q, k, position_ids=torch.zeros(1, 4, dtype=torch.long, device=device))
    with pytest.raises(OAError, match="rotary dim 10"):
        apply_rope(q, k, *reference.rope_angles(*_angles(1, 4, 10, device)))
    with pytest.raises(OAError, match=r"must be \(B, H, S, D\)") as e:
        apply_rope(q[0], k, cos, sin)
    assert "\n" not in str(e.value)
