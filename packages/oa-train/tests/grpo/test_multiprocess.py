"""GRPO on 2 CPU processes under DeepSpeed ZeRO-3: the rollouts generate from the whole weights (gathered on every
process, as TRL does) and the KL reference is sharded like the policy; the run equals the same run under DDP."""

from __future__ import annotations

import pytest
import torch

from oa_cli.main import main

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.usefixtures("cpu_workers_below_two_gpus")]


def test_zero3_generates_and_trains_as_ddp(grpo_config, tmp_path, records, weights, capfd, repo_root):
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed (./scripts/setup.sh --extra deepspeed)")
    rewards = [{"function": "length", "options": {"target": 2}}]  # built in: the workers see no test plugins
    for name, preset in (("ddp", None), ("zero3", "zero3")):
        config = grpo_config(name, rewards=rewards, beta=0.1, per_device_batch_size=8, max_steps=2, optimizer="sgd")
        launch = ["train", config, "--num-processes", "2"]
        if preset:
            launch += ["--accelerate-config", str(repo_root / "examples" / "configs" / "accelerate" / f"{preset}.yaml")]
        assert main(launch) == 0, capfd.readouterr().err[-3000:]

    ddp, zero3 = records(tmp_path / "ddp"), records(tmp_path / "zero3")
    assert [r["completions/mean_length"] for r in zero3] == [r["completions/mean_length"] for r in ddp]
    assert zero3[1]["kl"] > 0 and zero3[0]["reward_std"] > 0
    for got, want in zip(zero3, ddp, strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    w3, w1 = weights(tmp_path / "zero3" / "model"), weights(tmp_path / "ddp" / "model")
    for name in w1:
        torch.testing.assert_close(w3[name], w1[name], rtol=1e-5, atol=1e-6)
