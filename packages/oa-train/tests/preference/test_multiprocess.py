"""DPO and KTO on 2 CPU processes end with the weights and metrics of one process with the same pairs per step:
KTO's batch KL estimate and both losses are reduced over the processes, and under DeepSpeed ZeRO-3 the frozen
reference is sharded like the policy (built again, given the starting weights, in an engine of its own)."""

from __future__ import annotations

import pytest
import torch

from oa_cli.main import main

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.usefixtures("cpu_workers_below_two_gpus")]


@pytest.mark.parametrize(("method", "preset"), [("kto", None), ("dpo", "zero3")])
def test_two_processes_match_one_with_the_same_pairs_per_step(method, preset, run_config, tmp_path, weights, records,
                                                             capfd, repo_root):
    if preset:
        pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed (./scripts/setup.sh --extra deepspeed)")
    train = {"method": method, "optimizer": "sgd", "learning_rate": 0.5, "max_grad_norm": None, "eval_steps": 2}
    run_config("two", per_device_batch_size=2, **train)
    run_config("one", per_device_batch_size=4, **train)
    launch = ["train", str(tmp_path / "two.yaml"), "--num-processes", "2"]
    if preset:
        launch += ["--accelerate-config", str(repo_root / "examples" / "configs" / "accelerate" / f"{preset}.yaml")]
    assert main(launch) == 0, capfd.readouterr().err[-3000:]
    assert main(["train", str(tmp_path / "one.yaml")]) == 0

    two, one = records(tmp_path / "two"), records(tmp_path / "one")
    assert two[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)  # the reference is the starting policy
    for got, want in zip(two, one, strict=True):
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    w2, w1 = weights(tmp_path / "two" / "model"), weights(tmp_path / "one" / "model")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-6)
