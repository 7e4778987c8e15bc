"""Evaluation (loss, token accuracy, BLEU/ROUGE), logs, loss curve, effective config, manifest, best-K."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from oa_train.sft import run_sft


def test_run_writes_eval_metrics_logs_plot_and_keeps_best(make_config, qa_data):
    cfg = make_config(
        "eval", max_steps=4, save_steps=1, eval_steps=1, save_total_limit=1, learning_rate=3e-3,
        per_device_batch_size=4, generation={"num_samples": 2, "max_new_tokens": 4},
        overrides=["train.weight_decay=0.1"],
    )
    final = run_sft(cfg, prepare_data=lambda c, t: qa_data)
    out = Path(cfg.config.output_dir)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [1, 2, 3, 4]
    for r in evals:
        assert r["eval_tokens"] == sum(sum(t != -100 for t in ex["labels"][1:]) for ex in qa_data[1])
        assert 0 <= r["eval_accuracy"] <= 1 and 0 <= r["eval_bleu"] <= 100 and 0 <= r["eval_rougeL"] <= 100
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # it learns
    assert final["eval_loss"] == evals[-1]["eval_loss"]
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in records)

    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["step"] for g in generations] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert all(g["reference"] and g["prompt"] for g in generations)
    effective = yaml.safe_load((out / "effective_config.yaml").read_text())
    assert effective["config"]["train"]["weight_decay"] == 0.1 and effective["sources"]["train.weight_decay"] == "--set"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["ranks_in_sync"] is True
    assert manifest["data"]["train_rows"] == 16 and manifest["schedule"]["total_steps"] == 4

    # save_total_limit=1: the best checkpoint by eval_loss, plus the latest one for resume
    best_step = min(evals, key=lambda r: r["eval_loss"])["step"]
    kept = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir())
    assert kept == sorted({best_step, 4})
    assert manifest["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert (out / "model" / "tokenizer.json").is_file() and (out / "model" / "model.safetensors").is_file()


def test_pretrain_alias_on_text_rows(make_config, llama_tok):
    """`method: pretrain`: the same recipe on text rows where every token is supervised."""
    texts = ["The quick brown fox jumps over the lazy dog.", "A stitch in time saves nine.", "All that glitters is not gold."]
    rows = [{"input_ids": ids, "labels": ids} for ids in (llama_tok(t)["input_ids"] for t in texts)]
    cfg = make_config("pretrain", method="pretrain", max_steps=2, per_device_batch_size=3, learning_rate=1e-2,
                      gradient_checkpointing=True)
    first = run_sft(cfg, prepare_data=lambda c, t: (rows, rows))
    records = [json.loads(line) for line in (Path(cfg.config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["tokens"] == sum(len(r["input_ids"]) - 1 for r in rows)
    assert first["eval_loss"] < records[0]["loss"]


def test_missing_tracker_is_a_one_line_error():
    from accelerate.utils import is_tensorboard_available

    from oa_core.errors import OAError
    from oa_train.training.tracking import trackers

    assert trackers(["none"]) is None
    if is_tensorboard_available():
        assert trackers(["tensorboard", "none"]) == ["tensorboard"]
    else:
        with pytest.raises(OAError, match="train.report_to: 'tensorboard' is not installed"):
            trackers(["tensorboard"])


def test_hand_made_examples_breaking_the_contract_are_named(make_config):
    from oa_core.errors import OAError

    bad = [{"input_ids": [1, 2, 3], "labels": [1, 2]}]
    with pytest.raises(OAError, match="train example 0: labels has 2 tokens, input_ids 3"):
        run_sft(make_config("bad", max_steps=1), prepare_data=lambda c, t: (bad, []))


def test_a_run_ends_with_a_summary_and_a_tidy_terminal(make_config, qa_data, capsys):
    from pathlib import Path

    cfg = make_config("summary", max_steps=2, per_device_batch_size=4, save_steps=2, eval_steps=2)
    run_sft(cfg, prepare_data=lambda c, t: qa_data)
    out = capsys.readouterr()
    run = Path(cfg.config.output_dir)
    summary = out.out[out.out.index("done: 2 steps in"):].splitlines()
    assert summary[1] == f"  model: {run / 'model'}" and summary[2].startswith("  final eval: loss ")
    assert summary[3] == f"  best checkpoint by eval_loss: {run / 'checkpoints' / 'checkpoint-2'}"
    assert "Loading weights" not in out.err and "Writing model shards" not in out.err  # library progress bars
    assert (run / "logs" / "libraries.log").exists()
