"""`oa train --num-processes 2` on CPU (accelerate launch, gloo) with 2 accumulation steps: both ranks
end with identical weights, equal to one process with a 4× per-device batch (the loss is normalised over
all micro-batches of both ranks; gradients sync only on the last micro-batch)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from oa_cli.main import main

SEED_TASKS = Path(__file__).resolve().parents[4] / "examples" / "data" / "alpaca-seed" / "seed_tasks_alpaca.jsonl"


def _config(tmp_path, model_dir, name, batch, accumulation) -> str:
    doc = {
        "method": "sft", "seed": 3, "output_dir": str(tmp_path / name), "model": {"path": model_dir, "dtype": "float32"},
        "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca"}],
        "eval_datasets": [{"path": str(tmp_path / "eval.jsonl"), "format": "alpaca"}],
        "data": {"chat_template": "chatml", "max_length": 512, "cache_dir": str(tmp_path / "cache")},
        "train": {"max_steps": 2, "per_device_batch_size": batch, "gradient_accumulation_steps": accumulation, "optimizer": "sgd", "max_grad_norm": None, "learning_rate": 0.5,
                  "save_steps": 1, "eval_steps": 2, "logging_steps": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_two_processes_with_accumulation_match_one_process_with_larger_batch(tmp_path, tiny_model_dir, weights, capfd):
    rows = SEED_TASKS.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(rows[:8]) + "\n")
    (tmp_path / "eval.jsonl").write_text("\n".join(rows[8:11]) + "\n")

    assert main(["train", _config(tmp_path, tiny_model_dir, "two", batch=1, accumulation=2), "--num-processes", "2"]) == 0, capfd.readouterr().err[-3000:]
    assert main(["train", _config(tmp_path, tiny_model_dir, "one", batch=4, accumulation=1)]) == 0

    manifest = json.loads((tmp_path / "two" / "run_manifest.json").read_text())
    assert manifest["num_processes"] == 2 and manifest["distributed_type"] == "MULTI_CPU"
    assert manifest["ranks_in_sync"] is True and manifest["data"]["train_examples"] == 8
    w2, w1 = weights(tmp_path / "two" / "model"), weights(tmp_path / "one" / "model")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-7)
    logs = [[json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("one", "two")]
    assert [r["tokens"] for r in logs[0]] == [r["tokens"] for r in logs[1]]
    assert abs(logs[0][-1]["eval_loss"] - logs[1][-1]["eval_loss"]) < 1e-5  # 3 eval rows: one rank gets a filler
    assert logs[0][-1]["eval_tokens"] == logs[1][-1]["eval_tokens"]
    assert {p.name for p in (tmp_path / "two" / "checkpoints" / "checkpoint-2").iterdir()} >= {
        "random_states_0.pkl", "random_states_1.pkl", "trainer_state.json", "model.safetensors"}
