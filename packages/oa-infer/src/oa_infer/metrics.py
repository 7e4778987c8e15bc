"""Generation metrics: corpus BLEU (sacrebleu), ROUGE-1/2/L F1 (rouge-score), exact match, final-number accuracy
for verifiable answers (GSM8K) and the unbiased pass@k estimator."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence


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


# ----------------------------------------------------------------- the metrics of answers, as `oa eval` names them

TEXT_METRICS = ("bleu", "rouge", "exact_match", "accuracy")  # computed from one answer per record
METRICS = (*TEXT_METRICS, "pass_at_k", "reward", "perplexity")
LOWER_IS_BETTER = ("perplexity",)


def metric_keys(metric: str, ks: Sequence[int] = ()) -> list[str]:
    """The keys a metric reports under: ``rouge`` -> rouge1, rouge2, rougeL; ``pass_at_k`` -> pass@K for each K;
    any other its own name."""
    if metric == "rouge":
        return ["rouge1", "rouge2", "rougeL"]
    if metric == "pass_at_k":
        return [f"pass@{k}" for k in ks]
    return [metric]


def answer_scores(predictions: Sequence[str], references: Sequence[str],
                  metrics: Sequence[str]) -> tuple[dict[str, float], list[dict[str, bool]]]:
    """The scores of one answer per record against its reference, for the ``metrics`` among
    :data:`TEXT_METRICS`: ``bleu`` (sacrebleu's corpus BLEU) and ``rouge`` (rouge1/2/L: mean F1, no stemmer) on
    0-100, ``exact_match`` (SQuAD normalisation) and ``accuracy`` (final-number match) as fractions. Answers and
    references are stripped of surrounding whitespace. Also each record's ``exact_match``/``correct`` flags.
    ``oa eval`` and oa-train's generation metrics during SFT both score with this function."""
    unknown = [m for m in metrics if m not in TEXT_METRICS]
    if unknown:
        raise ValueError(f"not an answer metric: {', '.join(unknown)} (known: {', '.join(TEXT_METRICS)})")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    preds = [p.strip() for p in predictions]
    refs = [r.strip() for r in references]
    per: list[dict[str, bool]] = [{} for _ in preds]
    if not preds:
        return {}, per
    out: dict[str, float] = {}
    if "bleu" in metrics or "rouge" in metrics:
        text = text_metrics(preds, refs)
        out |= {k: text[k] for m in ("bleu", "rouge") if m in metrics for k in metric_keys(m)}
    for metric, key, check in (("exact_match", "exact_match", exact_match), ("accuracy", "correct", answer_correct)):
        if metric in metrics:
            flags = [check(p, r) for p, r in zip(preds, refs, strict=True)]
            out[metric] = sum(flags) / len(flags)
            for row, flag in zip(per, flags, strict=True):
                row[key] = flag
    return out, per


def pass_at_k_scores(samples: Sequence[Sequence[str]], references: Sequence[str], ks: Sequence[int], *,
                     correct: str = "accuracy") -> tuple[dict[str, float], list[int]]:
    """Mean unbiased pass@k (:func:`pass_at_k`) over records, for every k in ``ks``: ``samples[i]`` are the n
    answers to record i, judged by final-number match (``correct="accuracy"``) or exact match. Also the number of
    correct answers of every record."""
    check = {"accuracy": answer_correct, "exact_match": exact_match}[correct]
    counts = [sum(check(s, ref) for s in answers) for answers, ref in zip(samples, references, strict=True)]
    if not counts:
        return {}, counts
    out = {f"pass@{k}": sum(pass_at_k(len(answers), c, k) for answers, c in zip(samples, counts, strict=True))
           / len(counts) for k in ks}
    return out, counts
