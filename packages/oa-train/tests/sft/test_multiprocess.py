"""Two CPU processes (gloo) through accelerate launch: identical weights on both ranks, and the same
update as one process with twice the per-device batch (the loss is normalised over both ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from oa_core.config import load_config
from oa_train.launch import launch
from oa_train.sft.recipe import run_sft

WORKER = '''
import json, sys
from oa_core.config import load_config
from oa_train.sft.recipe import run_sft
train, evals = json.load(open(sys.argv[2]))
run_sft(load_config(sys.argv[1]), prepare_data=lambda cfg, tok: (train, evals))
'''


def _config(tmp_path, model_dir, name, batch):
    doc = {"method": "sft", "seed": 3, "output_dir": str(tmp_path / name), "model": {"path": model_dir, "dtype": "float32"},
           "train": {"max_steps": 2, "per_device_batch_size": batch, "optimizer": "sgd", "learning_rate": 0.5,
                     "save_steps": 1, "eval_steps": 2, "logging_steps": 1}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_two_processes_match_one_process_with_double_batch(tmp_path, tiny_model_dir, qa_data, weights):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([qa_data[0][:8], qa_data[1]]))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    two = _config(tmp_path, tiny_model_dir, "two", batch=2)
    done = launch([str(script), str(two), str(data)], num_processes=2, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    one = load_config(_config(tmp_path, tiny_model_dir, "one", batch=4))
    run_sft(one, prepare_data=lambda cfg, tok: (qa_data[0][:8], qa_data[1]))

    manifest = json.loads((tmp_path / "two" / "run_manifest.json").read_text())
    assert manifest["num_processes"] == 2 and manifest["distributed_type"] == "MULTI_CPU"
    assert manifest["ranks_in_sync"] is True
    w2, w1 = weights(tmp_path / "two" / "model"), weights(tmp_path / "one" / "model")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-7)
    logs = [[json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("one", "two")]
    assert abs(logs[0][-1]["eval_loss"] - logs[1][-1]["eval_loss"]) < 1e-5
    assert [p.name for p in sorted((tmp_path / "two" / "checkpoints").iterdir())] == ["checkpoint-1", "checkpoint-2"]
    assert {p.name for p in (tmp_path / "two" / "checkpoints" / "checkpoint-2").iterdir()} >= {
        "random_states_0.pkl", "random_states_1.pkl", "trainer_state.json", "model.safetensors"}
    assert Path(tmp_path / "two" / "loss_curve.png").is_file()
