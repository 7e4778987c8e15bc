"""Preference methods through ``oa train``'s loop: learning a toy preference, the data summary and the reference
shown in the log and manifest, every method running end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oa_train.training.loop import train


def test_dpo_learns_a_toy_preference(run_config, records, capsys):
    """On a learnable set (the chosen reply is always the same cheerful yes), the implicit reward accuracy and
    margin rise, the chosen log-prob rises, and evaluation reports the same metrics."""
    loaded = run_config("toy", max_steps=12, learning_rate=5e-3, beta=0.5, padding_free=True, eval_steps=12,
                        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.1])
    final = train(loaded)
    log = records(loaded.config.output_dir)
    first, last = log[0], log[-1]
    assert last["rewards/margins"] > first["rewards/margins"] + 1 and last["rewards/accuracies"] == 1.0
    assert last["logps/chosen"] > first["logps/chosen"]
    assert {"loss/sigmoid", "loss/sft", "rewards/chosen", "rewards/rejected", "logps/rejected"} <= set(last)
    assert last["pairs"] == 4
    assert final["eval_rewards/accuracies"] == 1.0 and final["eval_rewards/margins"] > 1
    out = capsys.readouterr().out
    assert "[train] 24 of 24 groups" in out and "reference: a frozen copy of the starting model, computed live" in out
    manifest = json.loads((Path(loaded.config.output_dir) / "run_manifest.json").read_text())
    assert manifest["data"]["train_pairs"] == 24 and manifest["data"]["reference"] == {"source": "copy",
                                                                                        "precompute": False}


@pytest.mark.parametrize(("method", "train_options"), [
    ("kto", {"desirable_weight": 1.0}),
    ("orpo", {}),
    ("simpo", {"cpo_alpha": 0.5}),
    ("cpo", {}),
])
def test_every_method_trains_end_to_end(method, train_options, run_config, records):
    loaded = run_config(method, method=method, padding_free=True, **train_options)
    train(loaded)
    last = records(loaded.config.output_dir)[-1]
    assert last["step"] == 2 and "eval_loss" in last and "rewards/chosen" in last
    assert ("kl" in last) == (method == "kto")
    assert last["completions" if method == "kto" else "pairs"] == 4


def test_kto_on_the_shipped_unpaired_sample(run_config, repo_root, capsys):
    sample = repo_root / "examples" / "data" / "hh-rlhf" / "kto-harmless-base-test-300.jsonl.gz"
    loaded = run_config("kto-sample", method="kto", datasets=[{"path": str(sample), "format": "kto", "num_samples": 16}],
                        max_steps=1)
    train(loaded)
    out = capsys.readouterr().out
    assert "desirable," in out and "undesirable completions" in out


def test_lora_takes_the_policy_with_adapters_off_as_reference(run_config, records):
    """Under LoRA (reference.source: auto) no second model: the base model is the policy with its adapter off;
    precomputed, it trains to the same adapter."""
    peft = ["peft.method=lora", "peft.r=4", "peft.target_modules=[q_proj,v_proj]"]
    live = run_config("lora-live", overrides=peft, max_steps=2)
    train(live)
    cached = run_config("lora-cached", overrides=peft, max_steps=2, reference={"precompute": True})
    train(cached)
    for loaded in (live, cached):
        manifest = json.loads((Path(loaded.config.output_dir) / "run_manifest.json").read_text())
        assert manifest["data"]["reference"]["source"] == "adapters_off"
    a = records(live.config.output_dir)
    b = records(cached.config.output_dir)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-6)
    assert a[-1]["rewards/margins"] != 0  # the adapter moved
