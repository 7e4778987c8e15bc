"""CPU-side arithmetic of benchmarks/sft_throughput.py (MFU formula, warm-up handling, loss sanity check)."""

import importlib.util
import math
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "sft_throughput.py"
spec = importlib.util.spec_from_file_location("sft_throughput", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_attention_flops_counts_causal_products():
    # one sample of 4 tokens, 1 layer, 1 head of dim 1: QK^T and AV each 2*(p+1) per query, x3 for training
    positions = sum(p + 1 for p in range(4))
    assert bench.attention_flops(positions, layers=1, heads=1, head_dim=1) == 3 * 2 * 2 * positions
    assert bench.attention_flops(10, layers=24, heads=14, head_dim=64) == 12 * 24 * 14 * 64 * 10


def test_matmul_params_tied_head_counted_once():
    assert bench.matmul_params(1000, 300, 30, 10, tied=True) == 1000
    assert bench.matmul_params(1300, 300, 30, 10, tied=False) == 1000


def test_summarize_drops_warmup_and_computes_mfu():
    steps = [{"seconds": 9.0, "tokens": 100, "supervised": 50, "attn_flops": 0.0}] + [
        {"seconds": 1.0, "tokens": 100, "supervised": 60, "attn_flops": 400.0} for _ in range(3)]
    s = bench.summarize(steps, warmup=1, n_params=2, peak_flops=1000.0)
    assert s["measured_steps"] == 3 and s["tokens_per_s"] == 100 and s["supervised_per_s"] == 60
    assert s["step_ms_mean"] == 1000 and s["mfu"] == pytest.approx((6 * 2 * 100 + 400) / 1000)
    with pytest.raises(ValueError):
        bench.summarize(steps, warmup=4, n_params=2)


def test_check_losses():
    v = 32002
    assert bench.check_losses({"oa": math.log(v), "trl": math.log(v) + 0.01}, v) == []
    assert bench.check_losses({"oa": math.log(v), "trl": math.log(v) + 0.3}, v)
    assert bench.check_losses({"oa": float("nan")}, v)


def test_model_shapes():
    cfg = bench.model_config("qwen0.5b")
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == ("qwen2", 896, 24, 32000)
    llama = bench.model_config("llama1b")  # Llama-3.2-1B's shape
    assert (llama["model_type"], llama["hidden_size"], llama["num_hidden_layers"], llama["num_attention_heads"],
            llama["num_key_value_heads"], llama["intermediate_size"], llama["tie_word_embeddings"]) == (
        "llama", 2048, 16, 32, 8, 8192, True)
    assert bench.model_config("llama1b-128k")["vocab_size"] == 128256


def test_variants_and_ratio_lines_name_the_rows_they_compare():
    assert bench.parse_variant("trl+liger@flex_attention", "sdpa") == ("trl+liger", "flex_attention")
    assert bench.parse_variant("oa-default", "sdpa") == ("oa-default", "sdpa")
    with pytest.raises(SystemExit):
        bench.parse_variant("axolotl", "sdpa")
    row = lambda name, tps, peak: {"variant": name, "peak_gib": peak,  # noqa: E731
                                    "summary": {"tokens_per_s": tps, "supervised_per_s": tps / 2}}
    lines = bench.ratio_lines([row("oa-default", 300.0, 10.0), row("trl@flex_attention", 200.0, 20.0),
                               row("trl+liger@flex_attention", 250.0, 8.0)])
    assert lines == ["- oa-default / trl@flex_attention: tokens/s 1.50x, supervised tokens/s 1.50x, peak memory 0.50x",
                     "- oa-default / trl+liger@flex_attention: tokens/s 1.20x, supervised tokens/s 1.20x, peak memory 1.25x"]


def test_multi_gpu_rows_compare_with_rows_on_as_many_gpus_and_report_scaling():
    row = lambda name, tps, n: {"variant": name, "processes": n,  # noqa: E731
                                "summary": {"tokens_per_s": tps, "supervised_per_s": tps}}
    lines = bench.ratio_lines([row("oa-default", 100.0, 1), row("oa-default x2", 190.0, 2),
                               row("trl@flex_attention x2", 95.0, 2)])
    assert lines == ["- oa-default x2 / trl@flex_attention x2: tokens/s 2.00x, supervised tokens/s 2.00x",
                     "- oa-default x2 / oa-default: tokens/s 1.90x with 2 processes (scaling efficiency 95%)"]


def test_per_process_results_merge_into_one_row():
    step = lambda s, t: {"seconds": s, "tokens": t, "supervised": t // 2, "attn_flops": 1.0, "loss": 2.0}  # noqa: E731
    parts = [{"n_matmul": 7, "peak_gib": 3.0, "steps": [step(1.0, 100), step(2.0, 50)]},
             {"n_matmul": 7, "peak_gib": 4.0, "steps": [step(1.5, 90), step(1.0, 60)]}]
    merged = bench.merge_ranks(parts)
    assert merged["processes"] == 2 and merged["peak_gib"] == 4.0 and merged["n_matmul"] == 7
    assert merged["steps"] == [{"seconds": 1.5, "tokens": 190, "supervised": 95, "attn_flops": 2.0, "loss": 2.0},
                               {"seconds": 2.0, "tokens": 110, "supervised": 55, "attn_flops": 2.0, "loss": 2.0}]
    oa_parts = [dict(p, supervised_of_all=True) for p in parts]  # oa's loop counts them over all processes
    assert [s["supervised"] for s in bench.merge_ranks(oa_parts)["steps"]] == [50, 25]


def test_profiled_steps_are_left_out_of_the_averages():
    steps = [{"seconds": 1.0, "tokens": 100, "supervised": 50, "attn_flops": 0.0, "profiled": p}
             for p in (False, False, True, True, False)]
    steps[2]["seconds"] = steps[3]["seconds"] = 5.0
    s = bench.summarize(steps, warmup=1, n_params=1, peak_flops=1.0)
    assert s["measured_steps"] == 2 and s["step_ms_mean"] == 1000.0


def test_gpu_breakdown_categories_and_idle_time():
    assert bench.kernel_category("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT") == "matmul"
    assert bench.kernel_category("triton_tem_fused_flex_attention_backward_0") == "attention"
    assert bench.kernel_category("void at::native::(anonymous namespace)::fused_adamw_kernel") == "optimizer"
    assert bench.kernel_category("_swiglu_fwd_kernel") == "triton"
    assert bench.kernel_category("void at::native::vectorized_elementwise_kernel<4, ...>") == "elementwise/copy"
    kernels = [("gemm_a", 0.0, 40.0), ("flex_attention_fwd", 30.0, 50.0),  # overlapping: busy 0-50
               ("fused_adamw", 70.0, 80.0)]                                   # idle 50-70 and 80-100
    b = bench.gpu_breakdown(kernels, wall_us=200.0, steps=2)  # two steps of 100 us
    assert b["matmul"] == pytest.approx(0.020) and b["attention"] == pytest.approx(0.010)
    assert b["optimizer"] == pytest.approx(0.005)
    assert b["busy"] == pytest.approx(0.030) and b["idle"] == pytest.approx(0.070) and b["step"] == pytest.approx(0.1)
    assert bench.top_kernels(kernels, steps=2, n=1) == [("gemm_a", pytest.approx(0.020))]
