"""Rewards and advantages: TRL 1.16's advantage formula when every score is there; a reward function that raises,
times out, returns the wrong length or None is reported by name with the record, its completions are left out of
that function's advantage term only (counted), and the run goes on; the built-in reward functions."""

from __future__ import annotations

import json
import time

import pytest
import torch

from oa_cli.main import main
from oa_core import RewardFunction, hookimpl
from oa_core.plugins import add_plugin, get_registry, remove_plugin
from oa_train.grpo.advantages import group_advantages, nanstd
from oa_train.grpo.rewards import RewardCall, RewardScorer, Samples


def trl_advantages(rewards_per_func, weights, group, scale):
    """TRL 1.16's sum_then_normalize (grpo_trainer.py, _generate_and_score_completions), one process."""
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    mean = torch.nanmean(rewards.view(-1, group), dim=1).repeat_interleave(group, dim=0)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, group), dim=1).repeat_interleave(group, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean
    if scale != "none":
        advantages = advantages / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0), torch.isclose(std, torch.zeros_like(std))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_equal_trl_when_every_score_is_there(scale):
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (24, 2), generator=g).double()
    scores[8:12] = 1.0  # a group where every completion scores the same: zero std
    weights = torch.tensor([1.0, 0.5], dtype=torch.float64)
    ours = group_advantages(scores, weights, 4, scale)
    want, zero = trl_advantages(scores, weights, 4, scale)
    torch.testing.assert_close(ours.values, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(ours.zero_std, zero) and (scale == "batch" or ours.zero_std[8:12].all())


def test_a_missing_score_is_left_out_of_that_functions_term_only():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, float("nan")], [0.0, 1.0],  # group 1: b missing for c
                           [float("nan")] * 2, [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    adv = group_advantages(scores, torch.tensor([1.0, 2.0], dtype=torch.float64), 4, "none")
    # group 1: a's mean 0.5; b's mean over the 3 scores 2/3 fills the missing one, so c's b-term is 0
    b_mean = 2 / 3
    want = [0.5 + 2 * (0 - b_mean), -0.5 + 2 * (1 - b_mean), 0.5 + 0.0, -0.5 + 2 * (1 - b_mean)]
    torch.testing.assert_close(adv.values[:4], torch.tensor(want, dtype=torch.float64))
    # group 2: a completion no function scored gets advantage 0 and stays out of the mean (of 3, 0, 1)
    assert adv.values[4] == 0 and torch.isnan(adv.rewards[4])
    torch.testing.assert_close(adv.values[5:], torch.tensor([3.0, 0.0, 1.0], dtype=torch.float64) - 4 / 3)


def test_batch_scaling_uses_the_std_of_every_process():
    scores = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    other = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=torch.float64)  # another process's rewards
    adv = group_advantages(scores, torch.ones(1, dtype=torch.float64), 2, "batch",
                           gather=lambda t: torch.cat([t, other]))
    std = torch.cat([scores[:, 0], other]).std()
    torch.testing.assert_close(adv.values, torch.tensor([-0.5, 0.5, -0.5, 0.5], dtype=torch.float64) / (std + 1e-4))


# ---------------------------------------------------------------- misbehaving reward functions


def samples(n_records=3, group=2) -> Samples:
    n = n_records * group
    return Samples([f"q{i // group}" for i in range(n)], [f"c{i}" for i in range(n)],
                   {"reference": [f"r{i // group}" for i in range(n)]}, [f"data.jsonl:{i // group + 1}" for i in range(n)],
                   group)


def raises_on_record_2(prompts, completions, reference, **_):
    if "r1" in reference:
        raise ValueError("cannot parse r1")
    return [1.0] * len(completions)


def wrong_length(prompts, completions, **_):
    return [1.0] * (len(completions) + 1)


def none_for_some(prompts, completions, **_):
    return [None if c == "c3" else float("nan") if c == "c4" else "x" if c == "c5" else 0.5 for c in completions]


def slow(prompts, completions, **_):
    time.sleep(5)
    return [1.0] * len(completions)


def test_the_scorer_reports_by_name_and_record_and_keeps_the_other_scores():
    lines = []
    calls = [RewardCall("raises", raises_on_record_2, 1.0, {}, ("reference",)),
             RewardCall("wrong_length", wrong_length, 1.0, {}, ()),
             RewardCall("none_for_some", none_for_some, 1.0, {}, ()),
             RewardCall("ok", lambda p, c, **_: [2.0] * len(c), 1.0, {}, ())]
    scorer = RewardScorer(calls, timeout=None, report=lines.append)
    scores = scorer(samples())
    nan = float("nan")
    want = torch.tensor([[1, nan, 0.5, 2], [1, nan, 0.5, 2], [nan, nan, 0.5, 2], [nan, nan, nan, 2],
                         [1, nan, nan, 2], [1, nan, nan, 2]], dtype=torch.float64)
    torch.testing.assert_close(scores, want, equal_nan=True)
    assert scorer.problems["raises"].counts == {"raised": 2}
    assert scorer.problems["wrong_length"].counts == {"wrong result": 6}
    assert scorer.problems["none_for_some"].counts == {"None": 1, "not a number": 2}
    assert scorer.problems["ok"].counts == {} and scorer.step_excluded["raises"] == 2
    assert lines[0] == ("warning: reward 'raises': data.jsonl:2: raised ValueError: cannot parse r1; left out of this "
                        "function's advantage (2 completions so far)")
    assert "reward 'wrong_length': data.jsonl:1: returned 3 scores for 2 completions" in lines[1]
    assert any("reward 'none_for_some': data.jsonl:2: returned None for completion 2 of 2" in line for line in lines)


def test_a_reward_function_past_its_time_limit_is_left_out_and_reported():
    lines = []
    scorer = RewardScorer([RewardCall("slow", slow, 1.0, {}, ())], timeout=0.2, report=lines.append)
    started = time.perf_counter()
    scores = scorer(samples())
    assert time.perf_counter() - started < 2 and torch.isnan(scores).all()
    assert scorer.problems["slow"].counts == {"timed out": 6}
    assert "took longer than reward_timeout 0.2 s on 6 completions of 3 records" in lines[0]


class BadRewards:
    @hookimpl
    def register_reward_functions(self, register):
        register("bad.raises", RewardFunction(lambda prompts, completions, **_: [1 / (p == "3") for p in prompts],
                                              "raises ZeroDivisionError for the prompt '8'"))
        register("bad.none", RewardFunction(lambda prompts, completions, **_: [None] * len(completions), "always None"))
        register("bad.short", RewardFunction(lambda prompts, completions, **_: [0.0], "one score for all"))


def test_a_run_with_misbehaving_reward_functions_goes_on_and_counts_them(toy_rewards, grpo_config, records, tmp_path,
                                                                         capsys):
    add_plugin(BadRewards(), "bad-rewards")
    try:
        config = grpo_config("bad", max_steps=2, log_completions_steps=1, rewards=[{"function": "toy.copy_digit"}, {"function": "bad.raises"},
                                                          {"function": "bad.none"}, {"function": "bad.short"}])
        assert main(["train", config]) == 0
    finally:
        remove_plugin("bad-rewards")
    out = capsys.readouterr().out
    prompts = tmp_path / "prompts.jsonl"
    assert f"warning: reward 'bad.raises': {prompts}:2: raised ZeroDivisionError: division by zero" in out
    assert f"warning: reward 'bad.none': {prompts}:" in out and "returned None for completion 1 of 8" in out
    assert "warning: reward 'bad.short':" in out and "returned 1 scores for 8 completions" in out
    logged = [r for r in records(tmp_path / "bad") if "reward" in r]
    table = [json.loads(line) for line in (tmp_path / "bad" / "completions.jsonl").read_text().splitlines()]
    eights = [sum(r["prompt"] == "8" for r in table if r["step"] == step) for step in (1, 2)]
    assert [r["rewards/bad.raises/left_out"] for r in logged] == eights  # it fails for the prompt '8'
    assert all(r["rewards"]["bad.raises"] is None for r in table if r["prompt"] == "8")
    assert [r["rewards/bad.none/left_out"] for r in logged] == [16, 16]
    assert [r["rewards/bad.short/left_out"] for r in logged] == [16, 16]
    assert all(r["rewards/bad.raises/mean"] == 1.0 and "rewards/bad.none/mean" not in r for r in logged)
    assert all(r["rewards/toy.copy_digit/left_out"] == 0 for r in logged)
    problems = json.loads((tmp_path / "bad" / "run_manifest.json").read_text())["data"]["reward_problems"]
    assert problems == {"toy.copy_digit": {}, "bad.raises": {"raised": sum(eights)}, "bad.none": {"None": 32},
                        "bad.short": {"wrong result": 32}}


# ---------------------------------------------------------------- built-in reward functions


def test_numeric_answer_reads_gsm8k_solutions(repo_root):
    fn = get_registry().get("reward_function", "numeric_answer").fn
    rows = [json.loads(line) for line in (repo_root / "examples/data/gsm8k/train_500.jsonl").read_text().splitlines()[:3]]
    references = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]
    completions = [rows[0]["answer"], "She earned $10.", "The answer is 1,000."]
    assert references[:2] == ["72", "10"]
    assert fn([r["question"] for r in rows], completions, reference=references) == [1.0, 1.0, 0.0]
    assert fn(["q"], ["#### 5"], reference=["5"], correct=2.0, wrong=-1.0) == [2.0]


def test_regex_and_length_rewards():
    regex = get_registry().get("reward_function", "regex")
    options = regex.options.model_validate({"pattern": r"<answer>\d+</answer>", "mode": "fullmatch"}).model_dump()
    assert regex.fn(["q"] * 3, ["<answer>12</answer>", "x <answer>12</answer>", "<answer>a</answer>"],
                    **options) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not a regular expression"):
        regex.options.model_validate({"pattern": "(unclosed"})
    length = get_registry().get("reward_function", "length").fn
    assert length(["q"] * 4, ["a b c d", "a b", "", "a " * 9], target=4, tolerance=1) == [1.0, 0.75, 0.25, 0.0]
