"""examples/pipeline: SFT → RM → GRPO chained on the shipped data, each stage reading the previous stage's output.
The shipped configs are run as they are, but for fewer steps, shorter completions and output under tmp_path."""

from __future__ import annotations

import json
import math

import yaml


def _stage(repo_root, tmp_path, name: str, *, train: dict, model_path: str | None = None, rm_path: str | None = None):
    doc = yaml.safe_load((repo_root / "examples" / "pipeline" / f"{name}.yaml").read_text())
    assert doc["output_dir"] == f"runs/pipeline/{name}"  # the README's commands chain through these folders
    doc["output_dir"] = str(tmp_path / name)
    if model_path is not None:
        assert doc["model"]["path"] == "runs/pipeline/sft/model"
        doc["model"]["path"] = model_path
    if rm_path is not None:
        (reward,) = doc["train"]["rewards"]
        assert reward["function"] == "reward_model" and reward["options"]["path"] == "runs/pipeline/rm/model"
        reward["options"]["path"] = rm_path
    doc["train"] |= {"save_steps": None, **train}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_sft_then_rm_then_grpo_on_the_shipped_data(repo_root, tmp_path, monkeypatch):
    from oa_cli.main import main

    monkeypatch.chdir(repo_root)  # the configs name the shipped data relative to the repository
    sft = _stage(repo_root, tmp_path, "sft", train={"max_steps": 2, "logging_steps": 1, "warmup_steps": 0})
    assert main(["train", str(sft)]) == 0
    sft_model = str(tmp_path / "sft" / "model")
    rm = _stage(repo_root, tmp_path, "rm", train={"max_steps": 2, "logging_steps": 1, "warmup_steps": 0},
                model_path=sft_model)
    assert main(["train", str(rm)]) == 0
    rm_config = json.loads((tmp_path / "rm" / "model" / "config.json").read_text())
    assert rm_config["architectures"] == ["LlamaForSequenceClassification"] and len(rm_config["id2label"]) == 1
    grpo = _stage(repo_root, tmp_path, "grpo", model_path=sft_model, rm_path=str(tmp_path / "rm" / "model"),
                  train={"max_steps": 2, "num_generations": 4, "per_device_batch_size": 8,
                         "max_completion_length": 8, "log_completions_steps": 2})
    assert main(["train", str(grpo)]) == 0
    records = _records(tmp_path / "grpo")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:  # every completion scored by the reward model of the RM stage
        assert r["rewards/reward_model/left_out"] == 0 and math.isfinite(r["rewards/reward_model/mean"])
        assert r["rewards/reward_model/std"] > 0
    completions = [json.loads(line) for line in (tmp_path / "grpo" / "completions.jsonl").read_text().splitlines()]
    assert len(completions) == 8 and all(c["reward"] is not None for c in completions)
    assert (tmp_path / "grpo" / "model" / "model.safetensors").is_file()
