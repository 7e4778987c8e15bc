"""A full disk while writing a checkpoint: one line naming the checkpoint, the last complete checkpoint kept,
no half-written one left, the manifest says the run failed (its own write is best effort)."""

from __future__ import annotations

import errno
import json

import oa_train.training.state as state
from oa_cli.main import main


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(run_config, tmp_path, capsys,
                                                                                   monkeypatch):
    real = state.save_file
    calls = {"n": 0}

    def full_on_the_second_checkpoint(tensors, filename, *args, **kwargs):
        if "checkpoint-4" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        calls["n"] += 1
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(state, "save_file", full_on_the_second_checkpoint)
    assert main(["train", run_config()]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    ckpts = tmp_path / "run" / "checkpoints"
    assert err == [f"error: no space left on device while writing {ckpts / 'checkpoint-4'} (the last complete checkpoint "
                   f"is {ckpts / 'checkpoint-2'}) (hint: free space (or choose another output_dir), then continue with "
                   "--resume auto)"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2"]  # no temp folder left
    assert json.loads((tmp_path / "run" / "run_manifest.json").read_text())["status"] == "failed"

    monkeypatch.setattr(state, "save_file", real)  # space again: the run continues from checkpoint-2
    assert main(["train", run_config(), "--resume", "auto"]) == 0


def test_a_full_disk_in_the_failure_path_still_ends_in_one_line(run_config, tmp_path, capsys, monkeypatch):
    import oa_train.training.loop as loop

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "metrics.jsonl"))

    monkeypatch.setattr(loop.RunLog, "add", full)
    monkeypatch.setattr(loop, "write_manifest", lambda *a, **k: full())  # the failure handler cannot write either
    assert main(["train", run_config()]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: no space left on device while writing {tmp_path / 'run' / 'metrics.jsonl'} (hint: free "
                   "space (or choose another output_dir); continue with --resume auto)"]
