"""Checkpoints hold no pickles and resume never unpickles; a planted pickle or a damaged file is detected by the
manifest written last, and `--resume auto` falls back to the newest checkpoint that verifies."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from oa_cli.main import main


class _Payload:
    def __reduce__(self):
        return (Path("/tmp/oa-reliability-pwned").write_text, ("pwned",))


def test_checkpoints_hold_no_pickles_and_resume_unpickles_nothing(run_config, tmp_path, monkeypatch, weights):
    cfg = run_config()
    assert main(["train", cfg]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    names = {p.name for p in ckpt.iterdir()}
    assert names == {"model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json",
                     "rng_0.json", "rng_0.safetensors", "trainer_state.json", "checkpoint.json", "config.json",
                     "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    final = weights(tmp_path / "run" / "model")

    (tmp_path / "run" / "checkpoints" / "checkpoint-4").rename(tmp_path / "lost")  # continue from step 2
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled during resume")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    assert main(["train", cfg, "--resume", "auto"]) == 0
    resumed = weights(tmp_path / "run" / "model")
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_a_planted_pickle_is_refused_and_never_loaded(run_config, tmp_path, capsys):
    cfg = run_config()
    assert main(["train", cfg]) == 0
    latest = tmp_path / "run" / "checkpoints" / "checkpoint-4"
    (latest / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Payload()))
    Path("/tmp/oa-reliability-pwned").unlink(missing_ok=True)
    assert main(["train", cfg, "--resume", "auto"]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipping damaged checkpoint {latest}: custom_checkpoint_0.pkl is not listed" in err
    assert "resumed_from" in (manifest := json.loads((tmp_path / "run" / "run_manifest.json").read_text()))
    assert manifest["resumed_from"].endswith("checkpoint-2")
    assert not Path("/tmp/oa-reliability-pwned").exists()
    assert "custom_checkpoint_0.pkl" not in {p.name for p in latest.iterdir()}  # step 4 written again, whole

    (latest / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Payload()))
    assert main(["train", cfg, "--resume", str(latest)]) == 2  # named explicitly: refused, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged: custom_checkpoint_0.pkl is not listed" in err[0]


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(run_config, tmp_path, capsys, weights):
    full = run_config("full")
    assert main(["train", full]) == 0
    cut = run_config("cut")
    assert main(["train", cut]) == 0
    latest = tmp_path / "cut" / "checkpoints" / "checkpoint-4"
    data = (latest / "model.safetensors").read_bytes()
    (latest / "model.safetensors").write_bytes(data[: len(data) // 2])  # a crash of the disk, not of oa
    assert main(["train", cut, "--resume", "auto"]) == 0
    assert "model.safetensors has" in capsys.readouterr().err
    a, b = weights(tmp_path / "full" / "model"), weights(tmp_path / "cut" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)  # step 3 and 4 trained again from checkpoint-2, exactly


def test_when_no_checkpoint_verifies_auto_resume_stops_with_one_line(run_config, tmp_path, capsys):
    cfg = run_config(max_steps=2)
    assert main(["train", cfg]) == 0
    (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "scheduler.json").write_text("{}")
    assert main(["train", cfg, "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint" in err and "scheduler.json has 2 bytes" in err and "auto: no checkpoint in" in err
