"""Non-finite losses: a one-line stop, or skipped updates that keep the weights finite; bf16 autocast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oa_core.errors import OAError
from oa_train.sft import run_sft

EXPLODE = dict(max_steps=4, learning_rate=1e30, per_device_batch_size=4, max_grad_norm=None, lr_scheduler="constant")


def test_stop_policy_raises_one_line_error(make_config, qa_data):
    cfg = make_config("stop", nan_policy="stop", **EXPLODE)
    with pytest.raises(OAError) as err:
        run_sft(cfg, prepare_data=lambda c, t: qa_data)
    assert "train.nan_policy: non-finite loss or gradient at step" in str(err.value)
    assert "\n" not in str(err.value) and err.value.hint


def test_skip_policy_skips_updates(make_config, qa_data, weights):
    cfg = make_config("skip", nan_policy="skip", max_skipped_steps=5, **EXPLODE)
    final = run_sft(cfg, prepare_data=lambda c, t: qa_data)
    assert final["skipped_steps"] >= 1
    w = weights(Path(cfg.config.output_dir) / "model")
    assert all(torch.isfinite(t).all() for t in w.values())
    records = [json.loads(line) for line in (Path(cfg.config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_steps"] == final["skipped_steps"]


def test_bf16_mixed_precision_keeps_float32_master_weights(make_config, qa_data, weights):
    cfg = make_config("bf16", max_steps=2, per_device_batch_size=4, mixed_precision="bf16")
    final = run_sft(cfg, prepare_data=lambda c, t: qa_data)
    assert final["skipped_steps"] == 0 and final["eval_loss"] > 0
    w = weights(Path(cfg.config.output_dir) / "model")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in w.values())
