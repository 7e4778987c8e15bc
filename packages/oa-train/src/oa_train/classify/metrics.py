"""Classification metrics from confusion tallies that sum across processes: accuracy, macro-F1 (over the classes
that occur in the labels or the predictions, as scikit-learn's ``f1_score(average="macro")``) and a per-class
table (precision, recall, F1, support)."""

from __future__ import annotations

from collections.abc import Sequence


def tallies(predicted, target) -> list[float]:
    """``[correct, total, tp_0, fp_0, fn_0, tp_1, ...]`` of boolean (N, C) one-hot or multi-hot tensors;
    ``correct``/``total`` count records (single-label) or record × class decisions (multi-label)."""
    tp = (predicted & target).sum(0)
    fp = (predicted & ~target).sum(0)
    fn = (~predicted & target).sum(0)
    per_class = [float(x) for c in range(target.shape[1]) for x in (tp[c], fp[c], fn[c])]
    return [float((predicted == target).sum()), float(target.numel()), *per_class]


def class_metrics(totals: Sequence[float], names: Sequence[str], *, single_label: bool) -> tuple[dict[str, float], list[str]]:
    """``eval_accuracy``, ``eval_macro_f1`` and ``eval_f1_<class>``, and the per-class table as text lines."""
    correct, total, *counts = totals
    if single_label:  # a record is right when its predicted class is its label: a true positive
        correct, total = sum(counts[3 * c] for c in range(len(names))), total / len(names)
    rows, f1s, out = [], [], {}
    for c, name in enumerate(names):
        tp, fp, fn = counts[3 * c: 3 * c + 3]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        if f1 is not None:
            f1s.append(f1)
        out[f"eval_f1_{name}"] = f1 if f1 is not None else float("nan")
        rows.append(f"{name:<16}{precision:>10.3f}{recall:>10.3f}{(f1 or 0.0):>10.3f}{int(tp + fn):>10}")
    head = f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"
    metrics = {"eval_accuracy": correct / max(total, 1), "eval_macro_f1": sum(f1s) / len(f1s) if f1s else 0.0, **out}
    return metrics, [head, *rows]
