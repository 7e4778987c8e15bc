"""Ranking and classification metrics on hand-computed cases (ties included)."""

from __future__ import annotations

import math

import pytest
import torch

from oa_train.classify.metrics import class_metrics, tallies
from oa_train.reward.metrics import TALLIES, kendall_tau_b, prompt_tallies, ranking_metrics, spearman_rho


def test_kendall_tau_b_and_spearman_rho_with_and_without_ties():
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(5 * 6))  # τ-b: one tie in x
    assert spearman_rho([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))  # average ranks
    assert kendall_tau_b([1, 2], [5, 5]) is None and spearman_rho([3, 3, 3], [1, 2, 3]) is None
    assert kendall_tau_b([0, -1], [2.0, 1.0]) == 1 and spearman_rho([0, -1], [1.0, 2.0]) == -1


def test_a_prompt_with_a_tie_and_the_summed_metrics():
    one = prompt_tallies([0, 1, 1], [3.0, 1.0, 2.0])
    t = dict(zip(TALLIES, one, strict=True))
    assert (t["best_over_worst"], t["pairs"], t["pairs_right"], t["margin_sum"]) == (1, 2, 2, 3.0)
    assert t["tau_sum"] == pytest.approx(2 / math.sqrt(2 * 3)) and t["tau_n"] == 1
    two = prompt_tallies([0, 1], [0.0, 1.0])  # wrong
    metrics = ranking_metrics([a + b for a, b in zip(one, two, strict=True)])
    assert metrics["eval_accuracy"] == 0.5 and metrics["eval_pair_accuracy"] == pytest.approx(2 / 3)
    assert metrics["eval_margin"] == pytest.approx((2 + 1 - 1) / 3)
    assert metrics["eval_kendall_tau"] == pytest.approx((2 / math.sqrt(6) - 1) / 2)
    scores = [3.0, 1.0, 2.0, 0.0, 1.0]
    assert metrics["eval_reward_mean"] == pytest.approx(sum(scores) / 5)
    assert metrics["eval_reward_std"] == pytest.approx(torch.tensor(scores).std(unbiased=False).item())


def test_macro_f1_counts_the_classes_that_occur_as_scikit_learn_does():
    target = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 2]), 4).bool()
    predicted = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1]), 4).bool()
    metrics, table = class_metrics(tallies(predicted, target), ["a", "b", "c", "d"], single_label=True)
    assert metrics["eval_accuracy"] == 0.5
    assert metrics["eval_macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)  # class d occurs nowhere: left out
    assert metrics["eval_f1_a"] == pytest.approx(2 / 3) and math.isnan(metrics["eval_f1_d"])
    assert table[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert table[2].split() == ["b", "0.333", "1.000", "0.500", "1"]
    multi_t = torch.tensor([[1, 0, 1], [0, 1, 1]]).bool()
    multi_p = torch.tensor([[1, 1, 1], [0, 0, 1]]).bool()
    metrics, _ = class_metrics(tallies(multi_p, multi_t), ["x", "y", "z"], single_label=False)
    assert metrics["eval_accuracy"] == pytest.approx(4 / 6) and metrics["eval_f1_z"] == 1.0
    assert metrics["eval_macro_f1"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
