"""GRPO config mistakes are reported when the config loads, all at once, each as `file: key: message` — the batch
arithmetic explained —, and the prompts: formats, drops counted by record, the GSM8K sample with the built-in
reward."""

from __future__ import annotations

import json

import pytest
import yaml

from oa_cli.main import main
from oa_core.config import load_config
from oa_core.errors import ConfigError


def test_every_config_problem_at_once(grpo_config, repo_root, tmp_path):
    path = grpo_config(
        "bad", per_device_batch_size=6, gradient_accumulation_steps=1, num_generations=4, loss_type="kwise",
        max_completion_length=64, rewards=[{"function": "regex", "options": {"pattern": "(unclosed", "colour": 1}},
                                           {"function": "numeric_answer", "name": "regex"},
                                           {"function": "length"}],
        data=[{"path": str(repo_root / "examples/data/tinyshakespeare/input_100k.txt"), "format": "pretraining"}],
        top={"data": {"packing": True}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    problems = [p.removeprefix(f"{path}: ") for p in e.value.problems]
    assert problems == [
        "train.num_generations: per_device_batch_size 6 × gradient_accumulation_steps 1 = 6 completions per process "
        "per step is not a multiple of num_generations 4: each process generates, scores and normalises whole groups "
        "of num_generations completions of a prompt, (per_device_batch_size × gradient_accumulation_steps) / "
        "num_generations prompts per step (e.g. per_device_batch_size 8, or num_generations 3)",
        "train.loss_type: 'kwise' is a 'reward' loss; method 'grpo' takes a 'grpo' loss (grpo, bnpo, dr_grpo, dapo, "
        "or a plugin's)",
        "train.rewards.0.options.pattern: not a regular expression: missing ), unterminated subpattern at position 0",
        "train.rewards.0.options.colour: unknown option (allowed: pattern, mode, flags, matched, unmatched)",
        "train.rewards.1.name: 'regex' names train.rewards.0 too; give each a distinct name",
        "datasets.0.format: 'pretraining' gives Text records, which have no reference answer for reward 'regex' "
        "(numeric_answer)",
        "train.rewards.2.options.target: required option is missing",
        "data.packing: method 'grpo' batches its own completions; remove data.packing",
        "train.max_completion_length: 64 leaves no room for a prompt within the model's 64 positions",
    ]
    assert main(["config", "validate", path]) == 2  # the same, from the command line


def test_no_reward_function_and_an_unknown_one(grpo_config):
    with pytest.raises(ConfigError) as e:
        load_config(grpo_config("none", rewards=[]))
    assert e.value.problems[0].endswith("train.rewards: no reward function: list at least one, e.g. "
                                        "[{function: numeric_answer}] (oa plugins list --kind reward_function)")
    with pytest.raises(ConfigError) as e:
        load_config(grpo_config("typo", rewards=[{"function": "numeric_anwser"}]))
    assert "train.rewards.0.function: " in e.value.problems[0] and "did you mean 'numeric_answer'" in e.value.problems[0]


def test_prompts_from_several_formats_with_drops_counted(tmp_path, digit_model_dir, llama_tokenizer_dir, repo_root):
    """Conversations give their messages up to the last user turn and their answer as the reference; records
    without a reference for a reward that needs one, and prompts over max_prompt_length, are dropped by record."""
    from oa_data.tokenizer import prepare_run_tokenizer
    from oa_train.grpo.data import prepare_prompts

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps(r) + "\n" for r in [
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},  # no answer
        {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "long"}]}]))
    doc = {"method": "grpo", "output_dir": str(tmp_path / "o"), "model": {"path": digit_model_dir},
           "tokenizer": {"path": llama_tokenizer_dir}, "data": {"chat_template": "chatml", "max_drop_fraction": 1.0},
           "datasets": [{"path": str(chats), "format": "openai"},
                        {"path": str(repo_root / "examples/data/gsm8k/train_500.jsonl"), "format": "prompt_reference",
                         "field_map": {"prompt": "question", "reference": "answer"},
                         "options": {"reference_after": "####"}, "num_samples": 5}],
           "train": {"rewards": [{"function": "numeric_answer"}], "max_completion_length": 8}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / "c.yaml").config
    split = prepare_prompts(cfg, prepare_run_tokenizer(cfg), columns={"numeric_answer": ("reference",)},
                            max_prompt_length=250)  # every GSM8K prompt fits, the 300 words do not
    rows = {r["text"]: r for r in split.rows}
    assert rows["2+2?"]["prompt"] == [{"role": "user", "content": "2+2?"}] and rows["2+2?"]["columns"] == {"reference": "4"}
    assert rows["2+2?"]["where"] == f"{chats}:1"
    gsm = [r for r in split.rows if r["where"].startswith(str(repo_root))]
    assert len(gsm) == 5 and all(r["columns"]["reference"].lstrip("-").isdigit() for r in gsm)
    report = split.reports[str(chats)]
    assert (report.kept, report.problems.counts) == (1, {"without reference": 1, "too long": 1})
    assert sorted(report.problems.lines) == [f"{chats}:2: no 'reference' (reward 'numeric_answer' needs it)",
                                             f"{chats}:3: the prompt has 310 tokens, more than max_prompt_length 250"]


def test_the_gsm8k_sample_trains_with_the_built_in_reward(tmp_path, tiny_model_dir, repo_root, records):
    """examples/data/gsm8k/train_500.jsonl through the prompt_reference format and numeric_answer: every prompt is
    kept and every completion scored (a random model answers wrong: reward 0, no group has any spread)."""
    doc = {"method": "grpo", "seed": 0, "output_dir": str(tmp_path / "gsm8k"),
           "model": {"path": tiny_model_dir, "dtype": "float32"}, "data": {"chat_template": "chatml"},
           "datasets": [{"path": str(repo_root / "examples/data/gsm8k/train_500.jsonl"), "format": "prompt_reference",
                         "field_map": {"prompt": "question", "reference": "answer"},
                         "options": {"reference_after": "####"}}],
           "train": {"rewards": [{"function": "numeric_answer"}, {"function": "regex", "weight": 0.5,
                                                                 "options": {"pattern": "####"}}],
                     "max_steps": 1, "num_generations": 4, "per_device_batch_size": 8, "max_completion_length": 8,
                     "save_steps": None, "logging_steps": 1}}
    (tmp_path / "gsm8k.yaml").write_text(yaml.safe_dump(doc))
    assert main(["train", str(tmp_path / "gsm8k.yaml")]) == 0
    (record,) = records(tmp_path / "gsm8k")
    assert record["rewards/numeric_answer/left_out"] == 0 and record["rewards/numeric_answer/mean"] == 0.0
    assert record["frac_reward_zero_std"] == 1.0 and record["loss"] == 0.0
    manifest = json.loads((tmp_path / "gsm8k" / "run_manifest.json").read_text())
    assert manifest["data"]["train_prompts"] == 500 and manifest["data"]["max_prompt_length"] == 256 - 8
