"""Benchmark oa-kernels against eager PyTorch, torch.compile and Liger-Kernel, in one run, on one GPU.

    python benchmarks/kernels.py --out DIR        # writes DIR/kernels.json and DIR/kernels.md

Every case reports the median time (triton.testing.do_bench), the bytes it must move at least (each
input read once, each output written once) over that time as a fraction of the measured device-to-device
copy bandwidth, and the error of ours against eager. Providers that are missing (Liger not installed) or
fail are reported as such, not skipped silently.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

GIB = 1 << 30
SKIP: set[str] = set()  # providers left out of this run (--skip), e.g. {"compile"}


@dataclass
class Row:
    case: str
    provider: str
    ms: float | None = None
    bytes: int = 0
    peak_mib: float | None = None
    error: float | None = None
    grad_error: float | None = None  # max rel. error of the gradients against float32 (linear+CE)
    note: str = ""

    def fraction(self, copy_bytes_per_ms: float) -> float | None:
        if self.ms is None or not self.bytes:
            return None
        return self.bytes / self.ms / copy_bytes_per_ms


@dataclass
class Report:
    device: str
    date: str
    copy_gbps: float
    rows: list[Row] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def min_bytes(elements_read: int, elements_written: int, itemsize: int) -> int:
    """The fewest bytes a kernel must move: every input element read once, every output written once."""
    return (elements_read + elements_written) * itemsize


def speedups(rows: list[Row], case: str) -> dict[str, float]:
    """ours' speed-up over each other provider of one case (> 1: ours is faster). "ours" is the first ours row of
    the case, the automatic plan; forced variants that follow it are not the baseline."""
    times: dict[str, float] = {}
    for r in rows:
        if r.case == case and r.ms is not None:
            times.setdefault(r.provider, r.ms)
    if "ours" not in times:
        return {}
    return {p: t / times["ours"] for p, t in times.items() if p != "ours"}


def render_markdown(report: Report) -> str:
    copy_bytes_per_ms = report.copy_gbps * 1e6
    lines = [
        f"Device: {report.device}; date: {report.date}; measured copy bandwidth {report.copy_gbps:.0f} GB/s "
        "(device-to-device copy, bytes read + written).",
        "",
        "| case | provider | ms | fraction of copy bandwidth | ours' speed-up | peak MiB | max rel. error vs eager "
        "| gradients' max rel. error vs float32 | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report.rows:
        frac = r.fraction(copy_bytes_per_ms)
        up = speedups(report.rows, r.case).get(r.provider)
        cells = [
            r.case, r.provider,
            f"{r.ms:.3f}" if r.ms is not None else "-",
            f"{frac:.2f}" if frac is not None else "-",
            f"{up:.2f}x" if up is not None else "",
            f"{r.peak_mib:.0f}" if r.peak_mib is not None else "",
            f"{r.error:.1e}" if r.error is not None else "",
            f"{r.grad_error:.1e}" if r.grad_error is not None else "",
            r.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- GPU side


def _bench(fn, grad_to_none=None, rep: int = 300) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=50, rep=rep, grad_to_none=grad_to_none, return_mode="median")


def copy_bandwidth_gbps(nbytes: int = 2 * GIB) -> float:
    import torch

    src = torch.randn(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = _bench(lambda: dst.copy_(src))
    return 2 * nbytes / ms / 1e6


def _rel_error(got, want) -> float:
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max()).item()


def _peak_mib(fn) -> float:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _liger():
    try:
        import liger_kernel  # noqa: F401

        return None
    except Exception as e:
        return f"Liger-Kernel not importable: {type(e).__name__}"


def _run(report: Report, case: str, provider: str, make, nbytes: int, ref=None, memory: bool = False,
         grad_ref=None, note: str = ""):
    """Time ``make()`` -> (fn, grads_to_reset, output getter); record a row, or the reason it failed.

    ``grad_ref``: reference gradients of the tensors in grads_to_reset (their ``.grad`` after one call is
    compared)."""
    row = Row(case, provider, bytes=nbytes, note=note)
    if provider in SKIP:
        row.note = f"not run (--skip {provider})"
        report.rows.append(row)
        return
    try:
        fn, grads, output = make()
        fn()
        if ref is not None and output is not None:
            row.error = _rel_error(output(), ref)
        if grad_ref is not None:
            row.grad_error = max(_rel_error(t.grad, g) for t, g in zip(grads, grad_ref, strict=True))
        if memory:
            row.peak_mib = _peak_mib(fn)
        row.ms = _bench(fn, grads)
    except Exception as e:
        row.note = f"failed: {type(e).__name__}: {' '.join(str(e).split())[:120]}"
        traceback.print_exc()
    report.rows.append(row)
    print(f"{case:40s} {provider:10s} {row.ms if row.ms is None else round(row.ms, 4)} {row.note}", flush=True)


def bench_rope(report: Report, layout: str, B=8, HQ=32, HK=8, S=4096, D=128, backward=True):
    import torch

    from oa_kernels import reference
    from oa_kernels.rope import apply_rope

    dt = torch.bfloat16

    def qk():
        shape = lambda h: (B, S, h, D) if layout == "hf" else (B, h, S, D)  # noqa: E731
        q, k = (torch.randn(shape(h), device="cuda", dtype=dt) for h in (HQ, HK))
        if layout == "hf":
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        return q.requires_grad_(backward), k.requires_grad_(backward)

    pos = torch.arange(S, device="cuda")[None].expand(B, S)
    inv_freq = 1.0 / (500000 ** (torch.arange(0, D, 2, device="cuda").float() / D))
    cos, sin = (t.to(dt) for t in reference.rope_angles(pos, inv_freq))
    q0, k0 = qk()
    with torch.no_grad():
        ref = reference.rope(q0, k0, cos, sin)[0]
    passes = 2 if backward else 1
    nbytes = passes * min_bytes(q0.numel() + k0.numel(), q0.numel() + k0.numel(), 2)
    case = f"rope {layout} {'fwd+bwd' if backward else 'fwd'} q({B},{HQ},{S},{D}) k({B},{HK},{S},{D})"

    def maker(f):
        def make():
            q, k = qk()
            gq, gk = torch.randn_like(q), torch.randn_like(k)
            q.data.copy_(q0)
            k.data.copy_(k0)
            out = {}

            def fn():
                qo, ko = f(q, k)
                out["q"] = qo
                if backward:
                    torch.autograd.backward((qo, ko), (gq, gk))

            return fn, ([q, k] if backward else None), lambda: out["q"]

        return make

    eager = lambda q, k: reference.rope(q, k, cos, sin)  # noqa: E731
    _run(report, case, "ours", maker(lambda q, k: apply_rope(q, k, cos, sin)), nbytes, ref)
    _run(report, case + " (cos/sin in-kernel)", "ours",
         maker(lambda q, k: apply_rope(q, k, position_ids=pos, inv_freq=inv_freq)), nbytes, ref)
    _run(report, case, "eager", maker(eager), nbytes, ref)
    _run(report, case, "compile", maker(torch.compile(eager) if "compile" not in SKIP else eager), nbytes, ref)
    if (why := _liger()) is None:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        # Liger rotates in place: fresh copies keep its input the same each time (their cost is not timed out,
        # so time Liger on q/k that it may overwrite; the rotation keeps values bounded)
        _run(report, case, "liger", maker(lambda q, k: liger_rotary_pos_emb(q, k, cos, sin)), nbytes, None)
    else:
        report.rows.append(Row(case, "liger", note=why))


def bench_gelu(report: Report, variant: str, gated: bool, N=32768, M=14336, backward=False):
    import torch

    from oa_kernels import reference
    from oa_kernels.activations import geglu, gelu

    dt = torch.bfloat16
    a0 = torch.randn(N, M, device="cuda", dtype=dt)
    b0 = torch.randn(N, M, device="cuda", dtype=dt)
    n = a0.numel()
    inputs = 2 if gated else 1
    if backward:  # fwd: read inputs, write out; bwd: read dy + inputs, write their grads
        nbytes = min_bytes(inputs * n + (inputs + 1) * n, n + inputs * n, 2)
    else:
        nbytes = min_bytes(inputs * n, n, 2)
    name = "geglu" if gated else "gelu"
    label = "erf" if variant == "none" else "tanh"
    case = f"{name} ({label}) {'fwd+bwd' if backward else 'fwd'} {N}x{M}"
    with torch.no_grad():
        ref = reference.geglu(a0, b0, variant) if gated else reference.gelu(a0, variant)

    def maker(f):
        def make():
            a = a0.detach().clone().requires_grad_(backward)
            b = b0.detach().clone().requires_grad_(backward)
            dy = torch.randn_like(a) if backward else None
            out = {}

            def fn():
                y = f(a, b) if gated else f(a)
                out["y"] = y
                if backward:
                    y.backward(dy)

            return fn, ([a, b] if backward else None), lambda: out["y"]

        return make

    ours = (lambda a, b: geglu(a, b, variant)) if gated else (lambda a: gelu(a, variant))
    eager = (lambda a, b: reference.geglu(a, b, variant)) if gated else (lambda a: reference.gelu(a, variant))
    ctx = torch.enable_grad() if backward else torch.no_grad()
    with ctx:
        _run(report, case, "ours", maker(ours), nbytes, ref)
        _run(report, case, "eager", maker(eager), nbytes, ref)
        _run(report, case, "compile", maker(torch.compile(eager) if "compile" not in SKIP else eager), nbytes, ref)
        if gated and variant == "tanh":
            if (why := _liger()) is None:
                from liger_kernel.ops.geglu import LigerGELUMulFunction

                _run(report, case, "liger", maker(LigerGELUMulFunction.apply), nbytes, ref)
            else:
                report.rows.append(Row(case, "liger", note=why))


def linear_ce_plan(T: int, H: int, V: int, reduction: str = "mean") -> str:
    """ours' automatic plan for a shape, in words."""
    from oa_kernels import linear_ce

    rows, width = linear_ce._plan(T, H, V, 2, True, reduction != "none", None, None)
    if width >= V:
        return f"row chunks of {rows}"
    parts = -(-V // width)
    kept = linear_ce._kept_parts(parts, width, T, H, V) if reduction != "none" else 0
    return f"all rows, {parts} vocabulary parts of {width}" + (f", {kept} kept in grad_w" if kept else "")


def bench_linear_ce(report: Report, T=8192, H=4096, V=128256, reduction="mean", variants=True):
    """fwd+bwd of lm-head + cross-entropy; 'none' weighs the per-token losses by a random gradient (as DPO/RL do)."""
    import torch
    import torch.nn.functional as F

    from oa_kernels.linear_ce import fused_linear_cross_entropy

    dt = torch.bfloat16
    h0 = torch.randn(T, H, device="cuda", dtype=dt)
    w0 = torch.randn(V, H, device="cuda", dtype=dt) * H**-0.5
    labels = torch.randint(0, V, (T,), device="cuda")
    labels[::10] = -100
    weights = torch.rand(T, device="cuda") if reduction == "none" else None

    def finish(loss):
        return (loss * weights).sum() if weights is not None else loss

    h32, w32 = h0.float().requires_grad_(), w0.float().requires_grad_()
    ref32 = F.cross_entropy(F.linear(h32, w32), labels, reduction=reduction)
    finish(ref32).backward()
    grad_ref, ref = [h32.grad, w32.grad], ref32.detach()
    del h32, w32, ref32
    case = f"linear+CE {reduction} fwd+bwd T={T} H={H} V={V}"

    def maker(f):
        def make():
            h = h0.clone().requires_grad_()
            w = w0.clone().requires_grad_()
            out = {}

            def fn():
                loss = f(h, w)
                out["loss"] = loss.detach()
                finish(loss).backward()

            return fn, [h, w], lambda: out["loss"]

        return make

    timed = []

    def run(provider, f, note=""):
        _run(report, case, provider, maker(f), 0, ref, memory=True, grad_ref=grad_ref, note=note)
        timed.append((report.rows[-1], f))

    def ours(**kw):
        return lambda h, w: fused_linear_cross_entropy(h, w, labels, reduction=reduction, **kw)

    unfused = lambda h, w: F.cross_entropy(F.linear(h, w).float(), labels, reduction=reduction)  # noqa: E731
    run("ours", ours(), note=f"plan: {linear_ce_plan(T, H, V, reduction)}")
    liger_rows = triton_next_pow2(-(-T // -(-V // H)))
    for chunk, parts in [(liger_rows, 1), (2 * liger_rows, 1), (T, 32)] if variants else []:
        run("ours", ours(chunk_size=chunk, vocab_parts=parts),
            note=f"forced: {chunk} rows per chunk, {parts} vocabulary part{'s' if parts > 1 else ''}")
    run("eager", unfused)
    run("compile", torch.compile(unfused) if "compile" not in SKIP else unfused)
    if (why := _liger()) is None:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(reduction=reduction)
        run("liger", lambda h, w: liger(w, h, labels))
    else:
        report.rows.append(Row(case, "liger", note=why))
    for _ in range(LINEAR_CE_ROUNDS - 1):  # the first timing of a run comes out slow: best of interleaved rounds
        for row, f in timed:
            if row.ms is not None:
                fn, grads, _ = maker(f)()
                fn()
                row.ms = min(row.ms, _bench(fn, grads))


def _rope_inputs(layout: str, B=8, HQ=32, HK=8, S=4096, D=128):
    import torch

    dt = torch.bfloat16
    if layout == "hf":
        q = torch.randn(B, S, HQ, D, device="cuda", dtype=dt).transpose(1, 2)
        k = torch.randn(B, S, HK, D, device="cuda", dtype=dt).transpose(1, 2)
    else:
        q = torch.randn(B, HQ, S, D, device="cuda", dtype=dt)
        k = torch.randn(B, HK, S, D, device="cuda", dtype=dt)
    return q, k


def _rope_angles(B=8, S=4096, D=128):
    import torch

    from oa_kernels import reference

    pos = torch.arange(S, device="cuda")[None].expand(B, S)
    inv_freq = 1.0 / (500000 ** (torch.arange(0, D, 2, device="cuda").float() / D))
    table = ("table", *(t.to(torch.bfloat16) for t in reference.rope_angles(pos, inv_freq)))
    return table, ("positions", pos, inv_freq, 1.0)


def _sweep_rope(lines: list[str], apply: bool = True) -> None:
    """Kernel launches alone, per layout and direction; with ``apply`` set the module's SETTINGS to the best."""
    import itertools

    import torch

    from oa_kernels import rope as rope_mod

    table, positions = _rope_angles()
    candidates = list(itertools.product((1, 2, 4), (8, 16), (4, 8)))
    gb = 2 * 2 * (8 * 32 + 8 * 8) * 4096 * 128 / 1e6  # bytes read + written per pass, in MB
    for layout in ("hf", "contiguous"):
        q, k = _rope_inputs(layout)
        qo, ko = torch.empty_like(q), torch.empty_like(k)
        times = {}
        for cfg in candidates:
            times[cfg] = _bench(functools.partial(rope_mod._launch, q, k, qo, ko, table, False, cfg), rep=150)
            lines.append(f"rope {layout} fwd BLOCK_S={cfg[0]} GROUP={cfg[1]} warps={cfg[2]}: "
                         f"{times[cfg]:.4f} ms ({gb / times[cfg]:.0f} GB/s)")
        top = sorted(times, key=times.get)[:6]
        bwd = {}
        for cfg in top:
            bwd[cfg] = _bench(functools.partial(rope_mod._launch, q, k, qo, ko, table, True, cfg), rep=150)
            pos_ms = _bench(functools.partial(rope_mod._launch, q, k, qo, ko, positions, False, cfg), rep=150)
            lines.append(f"rope {layout} top fwd {cfg}: fwd {times[cfg]:.4f}, bwd {bwd[cfg]:.4f}, "
                         f"fwd from positions {pos_ms:.4f} ms")
        best_f, best_b = min(times, key=times.get), min(bwd, key=bwd.get)
        lines.append(f"rope {layout}: best fwd {best_f} {times[best_f]:.4f} ms, best bwd {best_b} {bwd[best_b]:.4f} ms; "
                     f"run 2's default {(2, 8, 8)} fwd {times[(2, 8, 8)]:.4f} ms")
        if apply:
            rope_mod.SETTINGS[(layout, False)] = best_f
            rope_mod.SETTINGS[(layout, True)] = best_b
        print("\n".join(lines[-8:]), flush=True)


def rope_interleaved(reps: int = 5) -> tuple[list[str], dict]:
    """RoPE fwd+bwd of ours (tables, positions) and Liger, interleaved ``reps`` times with the copy bandwidth."""
    import statistics

    import torch

    from oa_kernels.rope import apply_rope

    table, positions = _rope_angles()
    cos, sin = table[1], table[2]
    pos, inv_freq = positions[1], positions[2]
    providers = {
        "ours": lambda q, k: apply_rope(q, k, cos, sin),
        "ours, cos/sin in-kernel": lambda q, k: apply_rope(q, k, position_ids=pos, inv_freq=inv_freq),
    }
    if _liger() is None:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        providers["liger"] = lambda q, k: liger_rotary_pos_emb(q, k, cos, sin)
    results: dict[str, list[float]] = {"copy GB/s": []}
    fns = {}
    for layout in ("hf", "contiguous"):
        q, k = (t.requires_grad_() for t in _rope_inputs(layout))
        gq, gk = torch.randn_like(q), torch.randn_like(k)
        for name, f in providers.items():
            def fn(f=f, q=q, k=k, gq=gq, gk=gk):
                qo, ko = f(q, k)
                torch.autograd.backward((qo, ko), (gq, gk))

            fns[f"{layout} fwd+bwd {name}"] = (fn, [q, k])
            results[f"{layout} fwd+bwd {name}"] = []
    for _ in range(reps):
        results["copy GB/s"].append(copy_bandwidth_gbps())
        for key, (fn, grads) in fns.items():
            results[key].append(_bench(fn, grads))
    medians = {key: statistics.median(v) for key, v in results.items()}
    lines = [f"{key}: median {medians[key]:.4f} of {reps}: {' '.join(f'{x:.4f}' for x in v)}"
             for key, v in results.items()]
    print("\n".join(lines), flush=True)
    return lines, medians


def _sweep_gelu(lines: list[str]) -> None:
    import torch

    from oa_kernels import activations

    a = torch.randn(32768, 14336, device="cuda", dtype=torch.bfloat16)
    b, out = torch.randn_like(a), torch.empty_like(a)
    for block, nw in ((1024, 4), (1024, 8), (2048, 8), (4096, 8), (4096, 16)):
        activations.BLOCK, activations.NUM_WARPS = block, nw
        for name, tanh, mul in (("geglu tanh", True, True), ("gelu erf", False, False)):
            launch = functools.partial(activations._launch, activations._fwd_kernel, a.numel(), a, b, a, out,
                                       a.numel(), 1, TANH=tanh, HAS_MUL=mul, HAS_BIAS=False)
            lines.append(f"{name} fwd BLOCK={block} warps={nw}: {_bench(launch):.4f} ms")


def _sweep_linear_ce(lines: list[str], T=8192, H=4096, V=128256) -> None:
    """Time and peak memory of ours' fwd+bwd: the automatic plan and forced (rows per chunk, vocabulary
    parts), with eager and Liger for scale."""
    import torch
    import torch.nn.functional as F

    from oa_kernels.linear_ce import fused_linear_cross_entropy

    h = torch.randn(T, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(V, H, device="cuda", dtype=torch.bfloat16) * H**-0.5).requires_grad_()
    labels = torch.randint(0, V, (T,), device="cuda")

    def measure(name, f):
        fn = lambda: f().backward()  # noqa: E731
        fn()
        mib = _peak_mib(fn)
        ms = _bench(fn, [h, w], rep=600)
        lines.append(f"linear_ce {name}: {ms:.3f} ms, peak {mib:.0f} MiB")
        print(lines[-1], flush=True)

    measure("eager", lambda: F.cross_entropy(F.linear(h, w).float(), labels))
    if _liger() is None:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        measure("liger", lambda: liger(w, h, labels))
    measure(f"auto ({linear_ce_plan(T, H, V)})", lambda: fused_linear_cross_entropy(h, w, labels))
    base = triton_next_pow2(-(-T // -(-V // H)))  # Liger's rows per chunk
    for chunk, parts in ((base, 1), (2 * base, 1), (4 * base, 1), (T, 16), (T, 32), (T, 64)):
        measure(f"chunk {chunk} rows, {parts} vocab parts",
                lambda c=chunk, p=parts: fused_linear_cross_entropy(h, w, labels, chunk_size=c, vocab_parts=p))
    lines.append(_linear_ce_breakdown(h.detach(), w.detach(), labels, base))
    print(lines[-1], flush=True)


def _linear_ce_breakdown(h, w, labels, rows: int) -> str:
    """Where the time goes at one chunk size: each step of one chunk alone."""
    import torch

    from oa_kernels import linear_ce

    hc, buf = h[:rows], torch.empty(rows, w.shape[0], device="cuda", dtype=torch.bfloat16)
    gw, gh = torch.zeros_like(w), torch.empty_like(hc)
    loss, lse = torch.empty(rows, device="cuda"), torch.empty(rows, device="cuda")
    scale = torch.full((rows,), 1e-4, device="cuda")
    times = {
        "logits mm": _bench(lambda: torch.mm(hc, w.t(), out=buf)),
        "ce rows kernel": _bench(lambda: linear_ce._whole_rows(buf, labels[:rows], scale, loss, lse, -100, True)),
        "grad_h mm": _bench(lambda: torch.mm(buf, w, out=gh)),
        "grad_w addmm": _bench(lambda: gw.addmm_(buf.t(), hc)),
    }
    return (f"linear_ce chunk {rows} per-chunk steps (x{h.shape[0] // rows} chunks): "
            + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()))


def profile_linear_ce(configs=((None, None), (512, 1)), T=8192, H=4096, V=128256) -> list[str]:
    """GPU time per kernel of one fwd+bwd of ours at each (rows per chunk, vocabulary parts) (torch.profiler;
    (None, None): the automatic plan)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from oa_kernels.linear_ce import fused_linear_cross_entropy

    h = torch.randn(T, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(V, H, device="cuda", dtype=torch.bfloat16) * H**-0.5).requires_grad_()
    labels = torch.randint(0, V, (T,), device="cuda")
    lines = []
    for chunk, parts in configs:
        def step(c=chunk, p=parts):
            h.grad = w.grad = None
            fused_linear_cross_entropy(h, w, labels, chunk_size=c, vocab_parts=p).backward()

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        lines.append(f"linear_ce profile chunk {chunk}, {parts} parts (GPU time per fwd+bwd, mean of 3):")
        events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
        total = sum(e.device_time_total for e in events) / 3 / 1e3
        for e in events[:8]:
            lines.append(f"  {e.device_time_total / 3 / 1e3:8.3f} ms  x{e.count // 3:4d}  {e.key[:110]}")
        lines.append(f"  {total:8.3f} ms  total")
    print("\n".join(lines), flush=True)
    return lines


def triton_next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def sweep(suites=("rope", "gelu", "linear_ce"), apply: bool = True) -> list[str]:
    """Time ours alone over launch settings (block sizes, warps, chunks), to pick the defaults.

    With ``apply`` the module defaults are set to the best settings for the rest of the run (the report
    then shows them; copy them into the code)."""
    from oa_kernels import activations

    defaults = (activations.BLOCK, activations.NUM_WARPS)
    lines: list[str] = []
    if "rope" in suites:
        try:
            _sweep_rope(lines, apply)
        except Exception:
            traceback.print_exc()
    if "gelu" in suites:
        try:
            _sweep_gelu(lines)
        finally:
            activations.BLOCK, activations.NUM_WARPS = defaults
    if "linear_ce" in suites:
        try:
            _sweep_linear_ce(lines)
        except Exception:
            traceback.print_exc()
    for line in lines:
        print(line, flush=True)
    return lines


SUITES = ("rope", "geglu", "gelu", "linear_ce")
# (tokens, hidden, vocabulary): the target (Llama-3-8B head, 8k tokens), then Qwen2.5-0.5B at 16k tokens
LINEAR_CE_SHAPES = ((8192, 4096, 128256), (16384, 896, 151936))
LINEAR_CE_ROUNDS = 2  # each provider timed this many times, interleaved; the best median is reported


def run_all(suites=SUITES) -> Report:
    import torch

    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    import triton

    report = Report(props.name, datetime.date.today().isoformat(), copy_bandwidth_gbps())
    from oa_kernels import activations
    from oa_kernels import rope as rope_mod

    report.meta = {"torch": torch.__version__, "triton": triton.__version__,
                   "rope_settings": {f"{lay} {'bwd' if b else 'fwd'}": list(v) for (lay, b), v in rope_mod.SETTINGS.items()},
                   "gelu_settings": [activations.BLOCK, activations.NUM_WARPS],
                   "linear_ce_plan": {str(shape): linear_ce_plan(*shape) for shape in LINEAR_CE_SHAPES}}
    try:
        from importlib.metadata import version

        import liger_kernel  # noqa: F401

        report.meta["liger_kernel"] = version("liger-kernel")
    except Exception:
        report.meta["liger_kernel"] = None
    print(f"copy bandwidth {report.copy_gbps:.0f} GB/s on {report.device}", flush=True)
    if "rope" in suites:
        for layout in ("hf", "contiguous"):
            bench_rope(report, layout, backward=False)
            bench_rope(report, layout, backward=True)
    if "geglu" in suites:
        for backward in (False, True):
            bench_gelu(report, "tanh", gated=True, backward=backward)
        bench_gelu(report, "none", gated=True, backward=False)
    if "gelu" in suites:
        for variant in ("none", "tanh"):
            for backward in (False, True):
                bench_gelu(report, variant, gated=False, backward=backward)
    if "linear_ce" in suites:
        for i, (T, H, V) in enumerate(LINEAR_CE_SHAPES):
            bench_linear_ce(report, T, H, V, variants=i == 0)
        bench_linear_ce(report, *LINEAR_CE_SHAPES[0], reduction="none", variants=False)
    return report


def write(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(asdict(report), indent=1))
    (out / "kernels.md").write_text(render_markdown(report))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--sweep", action="store_true", help="time launch settings of ours first")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated subset of {', '.join(SUITES)}")
    parser.add_argument("--sweep-suites", default="rope,gelu,linear_ce", help="what --sweep covers")
    parser.add_argument("--skip", default="", help="comma-separated providers not to run (e.g. compile)")
    parser.add_argument("--profile-linear-ce", action="store_true", help="only: GPU time per kernel of ours' linear CE")
    parser.add_argument("--rope-reps", type=int, default=0,
                        help="also time RoPE fwd+bwd of ours and Liger interleaved this many times (medians)")
    args = parser.parse_args(argv)
    SKIP.update(p for p in args.skip.split(",") if p)
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU", file=sys.stderr)
        return 2
    if args.profile_linear_ce:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile.txt").write_text("\n".join(profile_linear_ce()) + "\n")
        return 0
    if args.sweep:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sweep.txt").write_text("\n".join(sweep(tuple(args.sweep_suites.split(",")))) + "\n")
    report = run_all(tuple(s for s in args.suites.split(",") if s))
    write(report, args.out)
    if args.rope_reps:
        try:
            lines, medians = rope_interleaved(args.rope_reps)
            report.meta["rope_interleaved"] = {"reps": args.rope_reps, "medians": medians, "lines": lines}
        except Exception:
            traceback.print_exc()
        write(report, args.out)
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
