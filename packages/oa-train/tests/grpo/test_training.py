"""`oa train` with `method: grpo` on CPU: a tiny policy learns a verifiable toy task (repeat the prompt's digit) and
its mean reward rises; a run interrupted in the middle of a generation batch (num_iterations 2) and resumed ends
with the same rewards, losses and weights as an uninterrupted one."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from oa_cli.main import main


def test_a_tiny_policy_learns_to_repeat_the_prompt_digit(toy_rewards, grpo_config, records, tmp_path, digit_prompts):
    config = grpo_config("learn", max_steps=16, log_completions_steps=8, eval_steps=16,
                         top={"eval_datasets": [{"path": digit_prompts, "format": "pretraining", "num_samples": 4}]})
    assert main(["train", config]) == 0
    out = tmp_path / "learn"
    logged = [r for r in records(out) if "reward" in r]
    rewards = [r["reward"] for r in logged]
    assert len(rewards) == 16
    assert sum(rewards[:3]) / 3 < 0.2 < 0.6 < sum(rewards[-3:]) / 3  # chance is 1/14 per word
    final = records(out)[-1]
    assert final["eval_reward"] >= 0.75 and final["eval_reward_toy.copy_digit"] == final["eval_reward"]
    first = logged[0]
    for key in ("loss", "reward", "reward_std", "rewards/toy.copy_digit/mean", "rewards/toy.copy_digit/std",
                "rewards/toy.copy_digit/left_out", "advantages/std", "advantages/min", "advantages/max",
                "frac_reward_zero_std", "completions/mean_length", "completions/max_length", "completions/min_length",
                "completions/clipped_ratio", "clip_ratio/low", "clip_ratio/high", "clip_ratio/region", "entropy",
                "grad_norm", "lr", "tokens"):
        assert key in first, key
    assert first["tokens"] > 16 and first["completions/max_length"] <= 4 and first["entropy"] > 2  # ~ln 14 at first
    table = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in table] == [8] * 16 + [16] * 16  # every completion of the steps 8 and 16
    assert set(table[0]) == {"step", "where", "prompt", "completion", "rewards", "reward", "advantage"}
    assert table[0]["where"].startswith(digit_prompts + ":")
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["data"]["train_prompts"] == 40 and manifest["schedule"]["examples_per_step"] == 2
    assert manifest["data"]["reward_problems"] == {"toy.copy_digit": {}}


def _interrupt_at(step):
    def callback(s, record):
        if s == step:
            raise KeyboardInterrupt

    return callback


def test_resume_in_the_middle_of_a_generation_batch_is_exact(toy_rewards, grpo_config, records, tmp_path, weights):
    """num_iterations 2: steps 3 and 4 train on the completions generated at step 3. Interrupted after step 4's
    checkpoint at step 3, the resumed run needs step 3's completions, their old and reference log-probs (beta > 0: a
    frozen copy of the initial model), from the checkpoint; it then draws the same prompts and sampling seeds."""
    from oa_core.config import load_config
    from oa_train.grpo import run_grpo

    train = dict(max_steps=6, num_iterations=2, beta=0.05, save_steps=3, per_device_batch_size=8,
                 gradient_accumulation_steps=2, logprob_mismatch="on", log_completions_steps=1)
    run_grpo(load_config(grpo_config("full", **train)))
    cut = grpo_config("cut", **train)
    with pytest.raises(KeyboardInterrupt):
        run_grpo(load_config(cut), callbacks=[_interrupt_at(4)])
    ckpt = tmp_path / "cut" / "checkpoints" / "checkpoint-3"
    assert {"objective_0.safetensors", "objective_0.json"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt / "objective_0.json").read_text())["buffer_step"] == 2  # 0-based: step 3's generation
    final = run_grpo(load_config(cut, ["train.resume_from=auto"]))
    assert final["step"] == 6

    full, resumed = records(tmp_path / "full"), records(tmp_path / "cut")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert resumed == full  # rewards, losses, KL, clip ratios, mismatch: every logged value
    assert "reward" in full[2] and "reward" not in full[3]  # steps 2, 4, 6 reuse the completions of 1, 3, 5
    assert full[0]["kl"] == 0.0 and full[2]["kl"] > 0  # the reference is the initial model
    assert max(r["logprob_mismatch/max"] for r in full if "logprob_mismatch/max" in r) < 1e-4  # hf: same weights
    a, b = weights(tmp_path / "full" / "model"), weights(tmp_path / "cut" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "cut" / "completions.jsonl").read_text() == (tmp_path / "full" / "completions.jsonl").read_text()


def test_compiled_rollouts_sample_what_eager_ones_do(toy_rewards, grpo_config, records, tmp_path):
    """hf.compile: true (static cache, compiled decoding step; on CPU with inductor's C++ backend) on the policy being
    trained: its weights change in place after every step, and the compiled step samples what eager decoding does."""
    import torch._dynamo

    from oa_core.config import load_config
    from oa_train.grpo import run_grpo

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, compiled in (("eager", False), ("compiled", True)):
            run_grpo(load_config(grpo_config(name, max_steps=3, hf={"compile": compiled})))
    assert not [w for w in caught if "compiled decoding failed" in str(w.message)]
    eager, compiled = records(tmp_path / "eager"), records(tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert [r["reward"] for r in compiled] == [r["reward"] for r in eager]
    assert [r["completions/mean_length"] for r in compiled] == [r["completions/mean_length"] for r in eager]
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=1e-4, abs=1e-6)
