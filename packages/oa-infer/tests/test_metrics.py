import json

import pytest

from oa_infer.metrics import (
    answer_correct,
    exact_match,
    final_number,
    normalize_answer,
    pass_at_k,
    text_metrics,
)


def test_exact_match_normalises_like_squad():
    assert normalize_answer("  The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Answer is: Paris.", "answer is paris")
    assert not exact_match("Paris", "London")


@pytest.mark.parametrize("text,number", [
    ("so 9 * 2 = $<<9*2=18>>18\n#### 18", "18"),
    ("She earns $1,200.50 a month", "1200.5"),
    ("The answer is 18.00.", "18"),
    ("#### -3 and later 7", "-3"),   # the marked answer wins over later numbers
    ("first 3, then 12 apples", "12"),
    ("no digits here", None),
])
def test_final_number(text, number):
    assert final_number(text) == number


def test_gsm8k_references_from_shared_data(repo_root):
    rows = [json.loads(line) for line in (repo_root / "examples/data/gsm8k/train_500.jsonl").read_text().splitlines()]
    for row in rows[:50]:
        reference = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert final_number(row["answer"]) == reference
        assert answer_correct(f"Let me think. The result is {reference}.", row["answer"])
        assert not answer_correct(f"The result is {int(float(reference)) + 1}.", row["answer"])


def test_pass_at_k_matches_the_definition():
    from itertools import combinations

    n, c = 6, 2
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k(5, 0, 3) == 0.0
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)


def test_text_metrics_identical_and_disjoint():
    same = text_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same["bleu"] == pytest.approx(100) and same["rougeL"] == pytest.approx(100)
    apart = text_metrics(["dogs bark loudly"], ["the cat sat on the mat"])
    assert apart["rouge1"] == 0 and apart["bleu"] < 1
