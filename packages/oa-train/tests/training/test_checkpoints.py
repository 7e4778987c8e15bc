"""Checkpoint folders: complete ones only, pruned to the best K by the metric (+ the latest)."""

from __future__ import annotations

import json

import pytest

from oa_train.training.checkpoint import Checkpoints


def _fake(root, losses):
    for step, loss in enumerate(losses, start=1):
        d = root / "checkpoints" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text(json.dumps({"step": step, "metrics": {"eval_loss": loss, "eval_bleu": -loss}}))
    (root / "checkpoints" / ".checkpoint-9.tmp").mkdir()  # interrupted write
    (root / "checkpoints" / "checkpoint-8").mkdir()  # no trainer_state.json: incomplete


@pytest.mark.parametrize(
    ("metric", "greater", "kept"),
    [("eval_loss", False, [2, 4, 5]), ("eval_bleu", True, [2, 4, 5]), ("eval_loss", True, [3, 5])],
)
def test_prune_keeps_best_k_and_latest(tmp_path, metric, greater, kept):
    _fake(tmp_path, [0.5, 0.2, 0.9, 0.3, 0.8])
    ckpts = Checkpoints(tmp_path, limit=2, metric=metric, greater_is_better=greater)
    assert [s for s, _ in ckpts.list()] == [1, 2, 3, 4, 5]
    ckpts.prune()
    assert [s for s, _ in ckpts.list()] == kept
    assert ckpts.best().name == f"checkpoint-{3 if greater and metric == 'eval_loss' else 2}"
    assert ckpts.resolve("auto").name == "checkpoint-5"


def test_without_metric_keeps_latest(tmp_path):
    _fake(tmp_path, [0.5, 0.2, 0.9])
    ckpts = Checkpoints(tmp_path, limit=2, metric="eval_rougeL", greater_is_better=True)
    ckpts.prune()
    assert [s for s, _ in ckpts.list()] == [2, 3]
    assert Checkpoints(tmp_path / "none", limit=None, metric="eval_loss", greater_is_better=False).resolve("auto") is None
