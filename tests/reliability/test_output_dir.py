"""oa writes only into a new or empty folder or one of its own runs, never over an input, one run at a time,
and a refused run writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import yaml

from oa_cli.main import main
from oa_train.training.output_dir import RunLock


def _one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def test_a_folder_that_is_not_a_run_is_refused_and_left_alone(run_config, tmp_path, capsys):
    notes = tmp_path / "model" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    assert main(["train", run_config(output_dir=str(tmp_path / "model"))]) == 2
    assert "is not empty (notes.txt) and is not an oa run folder" in _one_error(capsys)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["notes.txt"] and notes.read_text() == "mine"


def test_an_output_path_that_is_a_file_is_one_line(run_config, tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    assert main(["train", run_config(output_dir=str(tmp_path / "out"))]) == 2
    assert "output_dir: " in _one_error(capsys) and (tmp_path / "out").read_text() == "a file"


def test_the_model_being_trained_cannot_be_replaced_by_the_run(run_config, tmp_path, capsys, small_model_dir):
    import shutil

    cfg = run_config(max_steps=2)
    assert main(["train", cfg]) == 0  # a finished run; then train its own final model into the same folder
    doc = yaml.safe_load(open(cfg))
    doc["model"]["path"] = str(tmp_path / "run" / "model")
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(doc))
    before = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    assert main(["train", str(tmp_path / "again.yaml")]) == 2
    assert "is the same file as the input model.path" in _one_error(capsys)
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == before


def test_a_second_run_into_a_locked_folder_is_refused(run_config, tmp_path, capsys):
    with RunLock(tmp_path / "run"):
        assert main(["train", run_config()]) == 2
    assert f"output_dir: {tmp_path / 'run'} is in use by another run (process {os.getpid()})" in _one_error(capsys)
    assert not (tmp_path / "run" / "effective_config.yaml").exists()
    assert main(["train", run_config()]) == 0  # released: the run goes ahead


def test_the_lock_goes_with_a_killed_process(run_config, tmp_path):
    code = (f"import os, signal; from oa_train.training.output_dir import RunLock; RunLock({str(tmp_path / 'run')!r}).__enter__(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    assert (tmp_path / "run" / ".oa-run.lock").exists()
    assert main(["train", run_config()]) == 0


def test_a_refused_resume_writes_nothing(run_config, tmp_path, capsys):
    cfg = run_config()
    assert main(["train", cfg]) == 0
    out = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["train", cfg, "--resume", "auto", "--set", "train.max_steps=6"]) == 2  # another schedule
    assert "was made for 4 steps, this config gives 6" in _one_error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert json.loads((out / "run_manifest.json").read_text())["status"] == "done"
