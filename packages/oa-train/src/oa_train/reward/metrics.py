"""Ranking metrics of a reward model on held-out prompts, from per-prompt tallies that sum across processes.

- ``accuracy``: the best reply scores above the worst (as Open-Assistant reported it; for pairs: the pair);
- ``pair_accuracy``: over all ordered (untied) pairs; ``margin``: their mean score difference (better - worse);
- ``kendall_tau`` (τ-b) and ``spearman`` (ρ of average ranks) between the true ranking and the scores, per
  prompt, averaged over the prompts where they are defined;
- ``reward_mean``, ``reward_std``: over every scored reply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TALLIES = ("prompts", "best_over_worst", "pairs", "pairs_right", "margin_sum", "tau_sum", "tau_n", "rho_sum", "rho_n",
           "replies", "reward_sum", "reward_sq")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b of two sequences (ties in either count neither way); None when one is constant."""
    n = len(x)
    s = n1 = n2 = n0 = 0
    for i in range(n):
        for j in range(i + 1, n):
            a, b = _sign(x[i] - x[j]), _sign(y[i] - y[j])
            s += a * b
            n0 += 1
            n1 += a == 0
            n2 += b == 0
    denominator = math.sqrt((n0 - n1) * (n0 - n2))
    return s / denominator if denominator else None


def average_ranks(x: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of their positions."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ: the Pearson correlation of the average ranks; None when one is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else None


def prompt_tallies(ranks: Sequence[int], scores: Sequence[float]) -> list[float]:
    """The :data:`TALLIES` of one prompt: ``ranks`` of its replies (0 = best, ties equal) and their ``scores``."""
    best = ranks.index(min(ranks))
    worst = len(ranks) - 1 - list(reversed(ranks)).index(max(ranks))
    diffs = [scores[i] - scores[j] for i in range(len(ranks)) for j in range(len(ranks)) if ranks[i] < ranks[j]]
    truth = [-r for r in ranks]
    tau, rho = kendall_tau_b(truth, scores), spearman_rho(truth, scores)
    return [1, float(scores[best] > scores[worst]), len(diffs), sum(d > 0 for d in diffs), sum(diffs),
            tau or 0.0, tau is not None, rho or 0.0, rho is not None,
            len(scores), sum(scores), sum(s * s for s in scores)]


def ranking_metrics(totals: Sequence[float], prefix: str = "eval_") -> dict[str, float]:
    """Metrics from summed :data:`TALLIES`."""
    t = dict(zip(TALLIES, totals, strict=True))
    mean = t["reward_sum"] / max(t["replies"], 1)
    out = {
        "accuracy": t["best_over_worst"] / max(t["prompts"], 1),
        "pair_accuracy": t["pairs_right"] / max(t["pairs"], 1),
        "margin": t["margin_sum"] / max(t["pairs"], 1),
        "kendall_tau": t["tau_sum"] / t["tau_n"] if t["tau_n"] else float("nan"),
        "spearman": t["rho_sum"] / t["rho_n"] if t["rho_n"] else float("nan"),
        "reward_mean": mean,
        "reward_std": math.sqrt(max(t["reward_sq"] / max(t["replies"], 1) - mean * mean, 0.0)),
        "prompts": t["prompts"],
    }
    return {prefix + k: v for k, v in out.items()}
