"""benchmarks/grpo_throughput.py: the issue's goals named by the rows they compare, the step-1 check, and a --tiny
run of oa and TRL on CPU."""

import importlib.util
import json
import sys
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "grpo_throughput.py"
spec = importlib.util.spec_from_file_location("grpo_throughput", PATH)
bench = importlib.util.module_from_spec(spec)
sys.path.insert(0, str(PATH.parent))  # it imports helpers from dpo_throughput and sft_throughput
spec.loader.exec_module(bench)


def test_goals_name_both_rows_and_compare_like_with_like():
    results = {"trl": {"step_ms_median": 10600, "peak_gib": 28.8}, "oa": {"step_ms_median": 5000, "peak_gib": 30},
               "trl-best": {"step_ms_median": 8000, "peak_gib": 20}, "oa-best": {"step_ms_median": 3000, "peak_gib": 19}}
    got = {g["name"]: (round(g["ratio"], 3), g["met"]) for g in bench.goals(results)}
    assert got == {"oa / trl step time": (0.472, True), "oa / trl peak memory": (1.042, False),
                   "oa-best / trl-best step time": (0.375, True), "oa-best / trl-best peak memory": (0.95, True),
                   "oa-best / trl step time": (0.283, True), "oa-best / trl peak memory": (0.66, True)}
    assert [g["name"] for g in bench.goals({"oa": {"step_ms_median": 1.0}, "trl": {"step_ms_median": 2.0}})] == [
        "oa / trl step time"]  # CPU: no peaks


def test_step_one_loss_must_be_finite():
    assert bench.check_losses({"oa": 0.0, "trl": -0.01}) == []
    assert bench.check_losses({"oa": float("nan")}) and bench.check_losses({"trl": None})


def test_tiny_run_measures_oa_and_trl_on_the_same_work(tmp_path):
    assert bench.main(["--tiny", "--out", str(tmp_path), "--variants", "trl,oa"]) == 0
    report = json.loads((tmp_path / "grpo_throughput.json").read_text())
    for name in ("trl", "oa"):
        r = report["results"][name]
        assert len(r["steps"]) == 3 and r["measured_steps"] == 2 and r["tokens_per_step"] > 0
        assert r["completion_length_mean"] == 8.0  # a random policy runs to max_completion_length on both sides
    assert [g["name"] for g in report["goals"]] == ["oa / trl step time"]
    table = (tmp_path / "grpo_throughput.md").read_text()
    assert "| trl | 8 | 8.0 |" in table and "| oa | 8 | 8.0 |" in table
