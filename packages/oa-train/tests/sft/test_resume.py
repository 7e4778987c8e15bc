"""Interrupted runs resume exactly: same data order, RNG, optimizer and schedule as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oa_train.sft import run_sft

TRAIN = dict(max_steps=6, save_steps=2, eval_steps=2, per_device_batch_size=2, gradient_accumulation_steps=2,
             warmup_steps=1, weight_decay=0.01)  # 16 examples: 4 steps per epoch, so the run crosses an epoch


def _interrupt_at(step):
    def callback(s, record):
        if s == step:
            raise KeyboardInterrupt
    return callback


def test_resume_after_interrupt_reproduces_uninterrupted_run(make_config, qa_data, weights):
    data = lambda cfg, tok: qa_data  # noqa: E731
    full = make_config("full", **TRAIN)
    run_sft(full, prepare_data=data)

    cut = make_config("cut", **TRAIN)
    with pytest.raises(KeyboardInterrupt):
        run_sft(cut, prepare_data=data, callbacks=[_interrupt_at(5)])
    out = Path(cut.config.output_dir)
    assert not (out / "model").exists()
    assert json.loads((out / "run_manifest.json").read_text())["status"] == "interrupted"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    # a checkpoint write killed half-way leaves only a temp folder, which resume ignores
    (out / "checkpoints" / ".checkpoint-6.tmp").mkdir()
    (out / "checkpoints" / ".checkpoint-6.tmp" / "model.safetensors").write_bytes(b"partial")

    from oa_core.errors import OAError

    with pytest.raises(OAError, match="output_dir: .* already has checkpoints of another run"):
        run_sft(make_config("cut", **TRAIN), prepare_data=data)  # a fresh start would mix two runs
    resumed = make_config("cut", overrides=["train.resume_from=auto"], **TRAIN)
    final = run_sft(resumed, prepare_data=data)
    assert final["step"] == 6

    a, b = weights(Path(full.config.output_dir) / "model"), weights(out / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["resumed_from"].endswith("checkpoint-4") and manifest["status"] == "done"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    full_log = (Path(full.config.output_dir) / "metrics.jsonl").read_text()
    assert (out / "metrics.jsonl").read_text() == full_log  # same losses, lrs, eval metrics at every step


def test_resume_rejects_a_folder_that_is_no_checkpoint(make_config, qa_data, tmp_path):
    from oa_core.errors import OAError

    cfg = make_config("bad", overrides=[f"train.resume_from={tmp_path}"], max_steps=1)
    with pytest.raises(OAError, match=r"train.resume_from: .* is not a complete checkpoint"):
        run_sft(cfg, prepare_data=lambda c, t: qa_data)


def test_sigkill_then_resume_via_cli(tmp_path, tiny_model_dir, weights, alpaca_seed):
    """`oa train` killed with SIGKILL right after a checkpoint; `oa train --resume auto` finishes it
    with exactly the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from oa_cli.main import main

    (tmp_path / "train.jsonl").write_text("\n".join(alpaca_seed.read_text().splitlines()[:12]) + "\n")

    def config(name):
        doc = {"method": "sft", "seed": 5, "output_dir": str(tmp_path / name), "model": {"path": tiny_model_dir, "dtype": "float32"},
               "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca"}],
               "data": {"chat_template": "chatml", "max_length": 256, "cache_dir": str(tmp_path / "cache")},
               "train": {"max_steps": 6, "per_device_batch_size": 2, "learning_rate": 1e-3, "save_steps": 1, "logging_steps": 1}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
        return str(tmp_path / f"{name}.yaml")

    assert main(["train", config("full")]) == 0
    killed = config("killed")
    proc = subprocess.Popen([sys.executable, "-m", "oa_cli.main", "train", killed],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints" / "checkpoint-1"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "model").exists()

    assert main(["train", killed, "--resume", "auto"]) == 0
    manifest = json.loads((tmp_path / "killed" / "run_manifest.json").read_text())
    assert "checkpoint-" in manifest["resumed_from"] and not manifest["resumed_from"].endswith("checkpoint-6")
    a, b = weights(tmp_path / "full" / "model"), weights(tmp_path / "killed" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
