import os

import pytest

from oa_train.training.tracking import RunLog


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process umask for the test; the old one is restored after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=oct)
def test_loss_plot_and_metrics_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    log = RunLog(tmp_path)
    log.add({"step": 1, "loss": 2.0})
    log.add({"step": 2, "loss": 1.5, "eval_loss": 1.7})
    plot = log.plot()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {
        "loss_curve.png": 0o666 & ~mask, "metrics.jsonl": 0o666 & ~mask}  # no temp file left either
