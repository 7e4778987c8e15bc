"""CPU-side arithmetic of benchmarks/dpo_throughput.py: warm-up handling, the issue's goals, the step-1 check."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "dpo_throughput.py"
spec = importlib.util.spec_from_file_location("dpo_throughput", PATH)
bench = importlib.util.module_from_spec(spec)
sys.path.insert(0, str(PATH.parent))  # it imports helpers from sft_throughput
spec.loader.exec_module(bench)


def test_summarize_drops_warmup_and_takes_the_median():
    steps = [{"seconds": 9.0, "tokens": 10}] + [{"seconds": s, "tokens": 100} for s in (0.2, 0.4, 0.3, 0.5)]
    s = bench.summarize(steps, warmup=1)
    assert s["measured_steps"] == 4 and s["step_ms_median"] == pytest.approx(350) and s["tokens_per_step"] == 100
    assert s["tokens_per_s"] == pytest.approx(400 / 1.4)
    with pytest.raises(ValueError):
        bench.summarize(steps, warmup=5)


def test_goals_compare_mode_against_mode():
    results = {"trl-live": {"step_ms_median": 310, "peak_gib": 22.8}, "oa-live": {"step_ms_median": 200, "peak_gib": 17},
               "trl-cached": {"step_ms_median": 257, "peak_gib": 20.8}, "oa-cached": {"step_ms_median": 150, "peak_gib": 18}}
    got = {g["name"]: (round(g["ratio"], 3), g["met"]) for g in bench.goals(results)}
    assert got == {"oa-live / trl-live step time": (0.645, True), "oa-live / trl-live peak memory": (0.746, True),
                   "oa-cached / trl-cached step time": (0.584, True), "oa-cached / trl-cached peak memory": (0.865, False),
                   "oa-cached / trl-live step time": (0.484, True)}
    assert [g["name"] for g in bench.goals({"oa-live": {"step_ms_median": 1.0}})] == []  # CPU: no peaks, no pairs


def test_step_one_loss_is_ln_2():
    assert bench.check_losses({"oa-live": math.log(2), "trl-live": math.log(2) + 1e-4}) == []
    assert bench.check_losses({"oa-live": 0.75})


def test_model_config_is_llama_3_2_1b_shape():
    cfg = bench.model_config("full")
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (2048, 16, 8, 128256)
