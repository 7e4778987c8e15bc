"""CPU-side helpers of benchmarks/rm_throughput.py: TRL gets the very token ids oa trains on; the loss check."""

import importlib.util
import math
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "rm_throughput.py"
spec = importlib.util.spec_from_file_location("rm_throughput", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_trl_rows_are_prompt_plus_each_reply():
    rows = [{"prompt_input_ids": [1, 2], "candidate_input_ids": [[3, 4], [5]], "ranks": [0, 1]},
            {"prompt_input_ids": [7], "candidate_input_ids": [[8], [9, 9]], "ranks": [1, 0]}]
    assert bench.trl_rows(rows) == [{"chosen_ids": [1, 2, 3, 4], "rejected_ids": [1, 2, 5]},
                                    {"chosen_ids": [7, 9, 9], "rejected_ids": [7, 8]}]


def test_check_losses_and_model_shape():
    assert bench.check_losses({"oa": math.log(2) + 0.01, "trl": math.log(2)}) == []
    assert bench.check_losses({"oa": 1.2}) and bench.check_losses({"oa": float("nan")})
    cfg = bench.model_config("full")
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]) == (2048, 16, 8, 64)
