import pytest
import torch
import triton

from oa_core.errors import OAError
from oa_kernels import fused_linear_cross_entropy, linear_ce, reference


def _problem(shape, H, V, dtype, device, ignored=3):
    hidden = torch.randn(*shape, H, device=device).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, device=device) * H**-0.5).to(dtype).requires_grad_()
    labels = torch.randint(0, V, shape, device=device)
    labels.view(-1)[:ignored] = -100
    return hidden, weight, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("shape,H,V", [((2, 9), 16, 50), ((13,), 24, 129)])
def test_loss_and_gradients_match_unfused(shape, H, V, chunk_size, reduction, dtype, device, assert_close):
    hidden, weight, labels = _problem(shape, H, V, dtype, device)
    loss = fused_linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=chunk_size)
    grad_out = torch.randn_like(loss) if reduction == "none" else torch.tensor(1.7, device=device)
    grads = torch.autograd.grad(loss, (hidden, weight), grad_out)
    h64, w64 = (t.detach().double().requires_grad_() for t in (hidden, weight))
    want = reference.linear_cross_entropy(h64, w64, labels, reduction=reduction)
    want = want.reshape(labels.shape) if reduction == "none" else want
    want_grads = torch.autograd.grad(want, (h64, w64), grad_out.double())
    assert loss.shape == want.shape and loss.dtype == torch.float32
    assert_close(loss, want, torch.float32 if dtype == torch.float32 else dtype)
    for got, ref in zip(grads, want_grads, strict=True):
        assert_close(got, ref, dtype)
    if reduction == "none":
        assert (loss.reshape(-1)[:3] == 0).all()  # ignored tokens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("parts", [2, 3])
def test_vocabulary_in_parts_matches_unfused(parts, reduction, dtype, device, assert_close):
    hidden, weight, labels = _problem((13,), 24, 129, dtype, device)
    labels[5], labels[6] = 0, 128  # first and last vocabulary entries
    loss = fused_linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=4, vocab_parts=parts)
    grad_out = torch.randn_like(loss) if reduction == "none" else torch.tensor(1.0, device=device)
    grads = torch.autograd.grad(loss, (hidden, weight), grad_out)
    h64, w64 = (t.detach().double().requires_grad_() for t in (hidden, weight))
    want = reference.linear_cross_entropy(h64, w64, labels, reduction=reduction)
    want_grads = torch.autograd.grad(want, (h64, w64), grad_out.double())
    assert_close(loss, want, torch.float32 if dtype == torch.float32 else dtype)
    for got, ref in zip(grads, want_grads, strict=True):
        assert_close(got, ref, dtype)
    with torch.no_grad():
        again = fused_linear_cross_entropy(hidden, weight, labels, reduction=reduction, vocab_parts=parts)
    assert torch.allclose(again, loss.detach(), atol=1e-5)


def test_other_ignore_index_and_no_weight_grad(device):
    hidden, weight, labels = _problem((10,), 8, 20, torch.float32, device, ignored=0)
    labels[::3] = 7
    weight = weight.detach()
    loss = fused_linear_cross_entropy(hidden, weight, labels, ignore_index=7)
    (grad,) = torch.autograd.grad(loss, hidden)
    want = torch.nn.functional.cross_entropy(hidden @ weight.T, labels, ignore_index=7)
    assert torch.allclose(loss, want, atol=1e-5)
    assert torch.allclose(grad, torch.autograd.grad(want, hidden)[0], atol=1e-6)


def test_bad_arguments_raise_one_line_errors(device):
    hidden, weight, labels = _problem((4,), 8, 20, torch.float32, device)
    with pytest.raises(OAError, match="unknown reduction 'avg'"):
        fused_linear_cross_entropy(hidden, weight, labels, reduction="avg")
    with pytest.raises(OAError, match="do not fit") as e:
        fused_linear_cross_entropy(hidden, weight.T, labels)
    assert "\n" not in str(e.value) and e.value.hint



@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_without_grad_gives_the_same_loss(reduction, device):
    hidden, weight, labels = _problem((3, 5), 8, 30, torch.float32, device)
    with torch.no_grad():
        loss = fused_linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=4)
    want = reference.linear_cross_entropy(hidden, weight, labels, reduction=reduction).detach()
    assert not loss.requires_grad
    assert torch.allclose(loss, want.reshape(loss.shape), atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_parts_kept_in_the_weight_gradient_match_unfused(reduction, device, assert_close):
    """All rows in one chunk, vocabulary in 4 parts: the first 3 keep their logits in grad_w's storage."""
    assert linear_ce._kept_parts(4, 33, 6, 24, 129) == 3
    hidden, weight, labels = _problem((6,), 24, 129, torch.float32, device, ignored=1)
    labels[1], labels[2], labels[3] = 0, 32, 33  # both sides of the first part boundary
    loss = fused_linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=6, vocab_parts=4)
    grad_out = torch.randn_like(loss) if reduction == "none" else torch.tensor(1.0, device=device)
    grads = torch.autograd.grad(loss, (hidden, weight), grad_out)
    h64, w64 = (t.detach().double().requires_grad_() for t in (hidden, weight))
    want = reference.linear_cross_entropy(h64, w64, labels, reduction=reduction)
    assert_close(loss, want, torch.float32)
    for got, ref in zip(grads, torch.autograd.grad(want, (h64, w64), grad_out.double()), strict=True):
        assert_close(got, ref, torch.float32)


@pytest.mark.parametrize("n,H,V,grad_w,recompute,plan", [
    (8192, 4096, 128256, True, True, "parts"),   # the benchmark's shape: parts, half of them kept
    (4096, 4096, 128256, True, True, "parts"),   # rows <= hidden: at most one part computed twice
    (65536, 4096, 128256, True, True, "rows"),   # long rows: recomputing costs more than re-reading grad_w
    (65536, 4096, 128256, True, False, "parts"),  # reduction 'none': nothing recomputed
    (8192, 4096, 128256, False, True, "rows"),   # frozen LM head (LoRA): no weight gradient to re-read
    (16384, 896, 151936, True, True, "parts"),   # Qwen2.5-0.5B, 16k tokens
    (100, 1024, 1000, True, True, "rows"),       # one Liger chunk holds every row
])
def test_plan_stays_within_ligers_logits_memory(n, H, V, grad_w, recompute, plan):
    rows, width = linear_ce._plan(n, H, V, 2, grad_w, recompute, None, None)
    liger_rows = triton.next_power_of_2(triton.cdiv(n, triton.cdiv(V, H)))
    assert min(rows, n) * width <= liger_rows * V
    assert ("parts" if rows >= n and width < V else "rows") == plan
    if plan == "parts" and n <= H:
        parts = triton.cdiv(V, width)
        assert linear_ce._kept_parts(parts, width, n, H, V) >= parts - 2


def test_bf16_gradients_in_vocabulary_parts_are_as_accurate_as_unfused(device):
    """grad_h summed over 16 parts in bf16 is not less accurate than one unfused bf16 product (the labels'
    large entries are added in float32 at the end, not rounded with every part)."""
    T, H, V = 128, 64, 4096
    hidden, weight, labels = _problem((T,), H, V, torch.bfloat16, device, ignored=5)
    h64, w64 = (t.detach().double().requires_grad_() for t in (hidden, weight))
    torch.nn.functional.cross_entropy(h64 @ w64.T, labels).backward()

    def grad_h_error(loss_fn):
        h = hidden.detach().clone().requires_grad_()
        loss_fn(h).backward()
        return ((h.grad.double() - h64.grad).abs().max() / h64.grad.abs().max()).item()

    unfused = grad_h_error(lambda h: torch.nn.functional.cross_entropy((h @ weight.detach().T).float(), labels))
    ours = grad_h_error(lambda h: fused_linear_cross_entropy(h, weight.detach(), labels, chunk_size=T, vocab_parts=16))
    assert ours <= unfused, (ours, unfused)
