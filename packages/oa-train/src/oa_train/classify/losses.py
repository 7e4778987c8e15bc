"""Sequence-classification losses (``register_losses``, family ``"classification"``), selected by
``train.loss``.

The family's contract: ``fn(logits, labels, config) -> Tensor``, the loss **summed**; ``fn.problem_type`` says
which labels it takes. single_label: ``labels`` (N,) long class indices, normalised by the summed class
weights of the labels (N without weights); multi_label: ``labels`` (N, C) float 0/1 targets, normalised by
N·C. ``logits`` are (N, C); ``config`` is the ``train:`` section (``class_weights``). Importing this module loads
no torch.
"""

from __future__ import annotations


def softmax_ce(logits, labels, config):
    """Softmax cross-entropy ``-log softmax(z)_y``, weighted by ``w_y`` (``config.class_weights``), summed; divided
    by ``Σ w_y`` it is ``torch.nn.functional.cross_entropy(z, y, weight=w)``. Shapes: (N, C), (N,) -> 0-d."""
    import torch.nn.functional as F

    weight = _weights(config, logits)
    return F.cross_entropy(logits, labels, weight=weight, reduction="sum")


softmax_ce.problem_type = "single_label"


def sigmoid_bce(logits, labels, config):
    """Binary cross-entropy of every class, ``-(t log σ(z) + (1 - t) log(1 - σ(z)))``, weighted by ``w_c``
    (``config.class_weights``), summed; divided by N·C it is ``binary_cross_entropy_with_logits(z, t, weight=w)``.
    Shapes: (N, C), (N, C) -> 0-d."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, labels, weight=_weights(config, logits), reduction="sum")


sigmoid_bce.problem_type = "multi_label"


def _weights(config, logits):
    import torch

    if config.class_weights is None:
        return None
    return torch.tensor(config.class_weights, dtype=logits.dtype, device=logits.device)


LOSSES = {
    "softmax_ce": (softmax_ce, "single-label classification: softmax cross-entropy with optional class weights"),
    "sigmoid_bce": (sigmoid_bce, "multi-label classification: per-class sigmoid binary cross-entropy"),
}
