"""Generation metrics: corpus BLEU (sacrebleu), ROUGE-1/2/L F1 (rouge-score), exact match, final-number accuracy
for verifiable answers (GSM8K) and the unbiased pass@k estimator."""

from __future__ import annotations

import math
import re
import string


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and mean ROUGE-1/2/L F1, all on a 0-100 scale (sacrebleu's and rouge-score's defaults)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if not predictions:
        return {}
    out = {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL"):
        out[key] = 100 * sum(s[key].fmeasure for s in scores) / len(scores)
    return out


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a/an/the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    """Whether the two strings are equal after :func:`normalize_answer` (SQuAD's exact match)."""
    return normalize_answer(prediction) == normalize_answer(reference)


_MARKED = re.compile(r"####\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")
_NUMBER = re.compile(r"-?\$?[0-9][0-9,]*(?:\.[0-9]+)?")


def final_number(text: str) -> str | None:
    """The answer of a GSM8K-style solution: the number after ``####`` if there is one, else the last number
    in the text (lm-evaluation-harness's strict match, then its flexible extract); commas and ``$`` removed,
    trailing zeros of a decimal dropped (``18.00`` -> ``18``). None when the text holds no number."""
    marked = _MARKED.findall(text)
    found = marked[-1] if marked else next(iter(reversed(_NUMBER.findall(text))), None)
    if found is None:
        return None
    number = found.replace(",", "").replace("$", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "0" if number in ("-0", "") else number


def answer_correct(prediction: str, reference: str) -> bool:
    """Whether the prediction's final number equals the reference's (GSM8K accuracy; a reference's
    ``#### N`` line or its last number)."""
    want = final_number(reference)
    return want is not None and final_number(prediction) == want


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``n`` samples of which ``c`` are correct (Chen et al. 2021,
    "Evaluating Large Language Models Trained on Code", eq. 1): ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
