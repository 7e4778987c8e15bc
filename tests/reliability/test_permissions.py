"""Output files follow the user's umask: every file and folder a run writes (model, checkpoints, logs, plot,
tokenized cache) gets the permissions a plain open() or mkdir() would, also where a library writes 0600."""

from __future__ import annotations

import os
from pathlib import Path

from oa_cli.main import main


def test_a_run_writes_everything_with_the_umask_permissions(tmp_path, run_config):
    config = run_config()
    old = os.umask(0o002)
    try:
        assert main(["train", config]) == 0
    finally:
        os.umask(old)
    wrong = {}
    for top in (tmp_path / "run", tmp_path / "cache"):
        for path in [top, *top.rglob("*")]:
            mode = path.stat().st_mode & 0o777
            if mode != (0o775 if path.is_dir() else 0o664):
                wrong[str(path.relative_to(tmp_path))] = oct(mode)
    assert wrong == {}
    names = {p.name for p in (tmp_path / "run").rglob("*")}
    assert {"loss_curve.png", "metrics.jsonl", "model.safetensors", "optimizer.safetensors", "checkpoint-4"} <= names
    assert any(Path(p).name.startswith("tokenized-") for p in os.listdir(tmp_path / "cache"))
