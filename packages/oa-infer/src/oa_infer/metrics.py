"""Generation metrics: corpus BLEU (sacrebleu) and mean ROUGE-1/2/L F1 (rouge-score)."""

from __future__ import annotations


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
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
