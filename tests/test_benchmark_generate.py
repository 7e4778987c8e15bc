"""benchmarks/generate_throughput.py: its arithmetic, and its --tiny mode end to end on the CPU."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "generate_throughput.py"
spec = importlib.util.spec_from_file_location("generate_throughput", PATH)
bench = importlib.util.module_from_spec(spec)
sys.path.insert(0, str(PATH.parent))  # it imports helpers from sft_throughput
spec.loader.exec_module(bench)


def test_summarize_takes_the_fastest_run():
    s = bench.summarize([{"seconds": 2.0, "tokens": 100}, {"seconds": 1.0, "tokens": 100}])
    assert s["seconds"] == 1.0 and s["tokens_per_s"] == 100 and s["runs_s"] == [2.0, 1.0]
    with pytest.raises(ValueError):
        bench.summarize([])


def test_ratios_name_both_rows():
    results = {"plain-generate": {"tokens_per_s": 100.0}, "plain-batched": {"tokens_per_s": 400.0},
               "oa-hf": {"tokens_per_s": 800.0}, "oa-hf-eager": {"tokens_per_s": 200.0}}
    assert bench.ratios(results) == [{"name": "oa-hf / plain-generate tokens/s", "ratio": 8.0},
                                     {"name": "oa-hf / plain-batched tokens/s", "ratio": 2.0},
                                     {"name": "oa-hf-eager / plain-generate tokens/s", "ratio": 2.0},
                                     {"name": "oa-hf-eager / plain-batched tokens/s", "ratio": 0.5},
                                     {"name": "oa-hf / oa-hf-eager tokens/s", "ratio": 4.0}]
    assert bench.ratios({"plain-generate": {"tokens_per_s": 1.0}}) == []


def test_generated_tokens_end_at_eos_and_drop_padding():
    assert bench.generated_tokens([5, 6, 2, 0, 0], [2], 0) == [5, 6, 2]
    assert bench.generated_tokens([5, 6, 7], [2], 0) == [5, 6, 7]
    assert bench.generated_tokens([5, 0, 0], [2], 0) == [5]


def test_model_config_is_llama_3_2_1b_shape():
    cfg = bench.model_config("full")
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (2048, 16, 8, 128256)


def test_tiny_run_end_to_end(tmp_path, capsys):
    assert bench.main(["--tiny", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "generate_throughput.json").read_text())
    assert list(report["results"]) == ["plain-generate", "plain-batched", "plain-static", "oa-hf", "oa-hf-eager"]
    assert report["results"]["plain-static"]["first_run_s"] > 0  # compiling variants get an untimed first run
    assert report["results"]["plain-generate"]["first_run_s"] is None
    tokens = {name: r["tokens"] for name, r in report["results"].items()}
    assert all(0 < t <= 12 * 8 for t in tokens.values())
    assert len(report["ratios"]) == 7 and report["ratios"][-1]["name"] == "oa-hf / oa-hf-eager tokens/s"
    # float32 on the CPU: the engine's greedy answers are the plain loop's
    assert set(report["same_text"].values()) == {12} and len(report["same_text"]) == 6
    assert len(set(tokens.values())) == 1
    table = (tmp_path / "generate_throughput.md").read_text()
    assert "| oa-hf | 4 |" in table and "- oa-hf / plain-generate tokens/s: " in table
