"""Checkpoint folders: complete ones only, pruned to the best K by the metric (+ the latest)."""

from __future__ import annotations

import json

import pytest

from oa_train.training.checkpoint import Checkpoints, write_manifest


def _fake(root, losses):
    for step, loss in enumerate(losses, start=1):
        d = root / "checkpoints" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text(json.dumps({"step": step, "metrics": {"eval_loss": loss, "eval_bleu": -loss}}))
        (d / "model.safetensors").write_bytes(bytes(range(step)))
        write_manifest(d)
    (root / "checkpoints" / ".checkpoint-9.tmp").mkdir()  # interrupted write
    (root / "checkpoints" / "checkpoint-8").mkdir()  # no checkpoint.json: incomplete
    (root / "checkpoints" / "checkpoint-8" / "trainer_state.json").write_text("{}")


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


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 5), "model.safetensors changed after it was written"),
    (lambda d: (d / "model.safetensors").write_bytes(b"x"), "model.safetensors has 1 bytes, 5 were written"),
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda d: (d / "custom_checkpoint_0.pkl").write_bytes(b"planted"), "custom_checkpoint_0.pkl is not listed"),
    (lambda d: (d / "checkpoint.json").write_text("{"), "checkpoint.json unreadable"),
])
def test_auto_resume_skips_a_damaged_latest_checkpoint_and_a_named_one_is_refused(tmp_path, capsys, damage, problem):
    from oa_core.errors import OAError

    _fake(tmp_path, [0.5, 0.2, 0.9, 0.3, 0.8])
    latest = tmp_path / "checkpoints" / "checkpoint-5"
    damage(latest)
    ckpts = Checkpoints(tmp_path, limit=None, metric="eval_loss", greater_is_better=False)
    assert ckpts.resolve("auto").name == "checkpoint-4"
    assert f"warning: skipping damaged checkpoint {latest}: {problem}" in capsys.readouterr().err
    with pytest.raises(OAError, match=f"train.resume_from: checkpoint '{latest}' is damaged: {problem}"):
        ckpts.resolve(str(latest))
