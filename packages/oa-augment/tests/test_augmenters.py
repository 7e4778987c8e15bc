"""Each built-in augmenter against the fake endpoint (replies written per test): what it makes, what it drops and
why, and that its records are valid ``oa.*`` rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oa_augment.config import validate
from oa_augment.pipeline import run_augment
from oa_core.extensions import RewardFunction


def rows(summary) -> list[dict]:
    return [json.loads(line) for line in Path(summary.output).read_text(encoding="utf-8").splitlines()]


def run(config_data, **changes):
    return run_augment(validate(config_data(**changes), {}, "run.yaml"), progress=False)


def user_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def test_self_instruct_parses_new_tasks_and_drops_bad_ones(config_data, server):
    def reply(prompt, body, k):
        seed = body["seed"] % 3
        if seed == 0:
            return f"Instruction: Name three colours of task {body['seed']}.\nInput: <noinput>\nOutput: Red, green, blue."
        if seed == 1:
            return "I cannot think of one."
        return f"Instruction: Translate the word into French number {body['seed']}.\nInput: cat\nOutput: chat"

    server.reply = reply
    summary = run(config_data, augmenter="self_instruct", options={"demonstrations": 3})
    made = rows(summary)
    assert made and summary.filtered_reasons["not a task in the asked form"] >= 1
    assert summary.done + summary.filtered == 12
    for row in made:
        assert row["kind"] == "conversation" and row["messages"][0]["content"].split()[0] in ("Name", "Translate")
    with_input = [r for r in made if r["messages"][0]["content"].startswith("Translate")]
    assert all(r["messages"][0]["content"].endswith("\n\ncat") for r in with_input)
    sent = server.bodies[0]["messages"][0]["content"]
    assert sent.count("Instruction:") == 4  # the form, then three demonstrations


def test_paraphrase_writes_n_distinct_rewrites(config_data, server):
    def reply(prompt, body, k):  # the third answer repeats the text
        text = user_text(prompt).split("text only.\n\n", 1)[1]
        return text if k == 2 else f"Rewritten {k}: {text}"

    server.reply = reply
    summary = run(config_data, augmenter="paraphrase", options={"n": 3}, dedup={"exact": False, "near": False})
    made = rows(summary)
    assert len(made) == 24 and summary.dropped["paraphrase empty or unchanged"] == 12
    assert {m["messages"][0]["content"].split(":")[0] for m in made} >= {"Rewritten 0", "Rewritten 1"}


def test_translate_keeps_the_turns(config_data, server):
    server.reply = lambda prompt, body, k: "[de] " + user_text(prompt).rsplit("\n\n", 1)[-1]
    summary = run(config_data, augmenter="translate", options={"language": "German"},
                  generation={"max_new_tokens": 1000})
    made = rows(summary)
    assert len(made) == 12 and all(m["metadata"]["language"] == "German" for m in made)
    assert all(msg["content"].startswith("[de] ") for m in made for msg in m["messages"])


def test_revision_needs_no_generator(config_data, server):
    data = config_data(augmenter="revision", generator=None)
    data.pop("engine")
    summary = run_augment(validate(data, {}, "run.yaml"), progress=False)
    made = rows(summary)
    assert made and server.count == 0 and summary.done + summary.filtered == 12
    for row in made:
        assert row["prompt"][0]["content"].startswith("Fix the spelling")
        assert row["prompt"][0]["content"] != row["completion"][0]["content"]


@pytest.fixture
def length_reward():
    from oa_core import hookimpl
    from oa_core.plugins import add_plugin, remove_plugin

    class Rewards:
        @hookimpl
        def register_reward_functions(self, register):
            register("test_length", RewardFunction(lambda prompts, completions, **kw: [float(len(c)) for c in completions]))

    add_plugin(Rewards(), "test_rewards")
    yield "test_length"
    remove_plugin("test_rewards")


@pytest.mark.parametrize("output", ["preference", "ranked", "best"])
def test_best_of_n_ranks_by_the_reward(config_data, server, length_reward, output):
    server.reply = lambda prompt, body, k: "x" * (5 + 3 * k)
    summary = run(config_data, augmenter="best_of_n", options={"n": 3, "output": output},
                  reward={"function": length_reward}, dedup={"exact": False, "near": False})
    made = rows(summary)
    assert len(made) == 12
    if output == "preference":
        assert made[0]["chosen"][0]["content"] == "x" * 11 and made[0]["rejected"][0]["content"] == "x" * 5
    elif output == "ranked":
        assert made[0]["replies"] == ["x" * 11, "x" * 8, "x" * 5] and made[0]["metadata"]["scores"] == [11, 8, 5]
    else:
        assert made[0]["messages"][-1]["content"] == "x" * 11


def test_best_of_n_without_a_reward_is_a_config_error(config_data):
    from oa_core.errors import ConfigError

    with pytest.raises(ConfigError, match="run.yaml: reward: augmenter 'best_of_n' ranks completions"):
        validate(config_data(augmenter="best_of_n"), {}, "run.yaml")


def test_judge_keeps_records_rated_high_enough(config_data, server):
    server.reply = lambda prompt, body, k: "Rating: 9" if "haiku" in user_text(prompt).lower() or body["seed"] % 2 else "Rating: 3"
    summary = run(config_data, augmenter="judge", options={"min_score": 7})
    made = rows(summary)
    assert made and all(m["metadata"]["judge_score"] == 9 for m in made)
    assert summary.filtered_reasons["judge rating below min_score"] == 12 - len(made)
