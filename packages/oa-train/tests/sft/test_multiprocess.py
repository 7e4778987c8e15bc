"""`oa train --num-processes 2` on CPU (accelerate launch, gloo) with 2 accumulation steps: both ranks
end with identical weights, equal to one process with a 4× per-device batch (the loss is normalised over
all micro-batches of both ranks; gradients sync only on the last micro-batch). The same with the DeepSpeed
ZeRO-2/3 presets (DeepSpeed's CPU accelerator over gloo), plus a resume from the step-1 checkpoint.
The FSDP preset has no CPU run: accelerate runs FSDP only on GPUs, so oa refuses it without one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from oa_cli.main import main

pytestmark = [pytest.mark.multiprocess, pytest.mark.usefixtures("cpu_workers_below_two_gpus")]


def _config(tmp_path, model_dir, name, batch, accumulation, **train) -> str:
    doc = {
        "method": "sft", "seed": 3, "output_dir": str(tmp_path / name), "model": {"path": model_dir, "dtype": "float32"},
        "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca"}],
        "eval_datasets": [{"path": str(tmp_path / "eval.jsonl"), "format": "alpaca"}],
        "data": {"chat_template": "chatml", "max_length": 256, "cache_dir": str(tmp_path / "cache")},
        "train": {"max_steps": 2, "per_device_batch_size": batch, "gradient_accumulation_steps": accumulation, "optimizer": "sgd", "max_grad_norm": None, "learning_rate": 0.5,
                  "save_steps": 1, "eval_steps": 2, "logging_steps": 1} | train,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _write_data(tmp_path, alpaca_seed) -> None:
    """8 training rows (2 steps of 4 examples) and 3 eval rows (one rank gets a filler)."""
    rows = alpaca_seed.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(rows[:8]) + "\n")
    (tmp_path / "eval.jsonl").write_text("\n".join(rows[8:11]) + "\n")


def test_two_processes_with_accumulation_match_one_process_with_larger_batch(tmp_path, tiny_model_dir, weights, capfd,
                                                                                alpaca_seed):
    _write_data(tmp_path, alpaca_seed)

    assert main(["train", _config(tmp_path, tiny_model_dir, "two", batch=1, accumulation=2), "--num-processes", "2"]) == 0, capfd.readouterr().err[-3000:]
    assert main(["train", _config(tmp_path, tiny_model_dir, "one", batch=4, accumulation=1)]) == 0

    manifest = json.loads((tmp_path / "two" / "run_manifest.json").read_text())
    assert manifest["num_processes"] == 2 and manifest["distributed_type"] == "MULTI_CPU"
    assert manifest["ranks_in_sync"] is True and manifest["data"]["train_rows"] == 8
    w2, w1 = weights(tmp_path / "two" / "model"), weights(tmp_path / "one" / "model")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-7)
    logs = [[json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("one", "two")]
    assert [r["tokens"] for r in logs[0]] == [r["tokens"] for r in logs[1]]
    assert abs(logs[0][-1]["eval_loss"] - logs[1][-1]["eval_loss"]) < 1e-5  # 3 eval rows: one rank gets a filler
    assert logs[0][-1]["eval_tokens"] == logs[1][-1]["eval_tokens"]
    files = {p.name for p in (tmp_path / "two" / "checkpoints" / "checkpoint-2").iterdir()}
    assert files == {"model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json", "rng_0.json",
                     "rng_0.safetensors", "rng_1.json", "rng_1.safetensors", "trainer_state.json", "checkpoint.json",
                     "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["zero2", "zero3"])
def test_deepspeed_preset_on_two_cpu_processes_matches_one_process_and_resumes(preset, tmp_path, tiny_model_dir, weights, capfd,
                                                                              alpaca_seed, repo_root):
    """The preset's bf16 yields to train.mixed_precision (no); AdamW, so the resume restores sharded optimizer state."""
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed (./scripts/setup.sh --extra deepspeed)")
    _write_data(tmp_path, alpaca_seed)
    adamw = {"optimizer": "adamw", "learning_rate": 1e-3}
    ds = _config(tmp_path, tiny_model_dir, "ds", batch=1, accumulation=2, **adamw)
    launch = ["train", ds, "--num-processes", "2", "--accelerate-config", str(repo_root / "examples" / "configs" / "accelerate" / f"{preset}.yaml")]
    assert main(launch) == 0, capfd.readouterr().err[-3000:]
    assert main(["train", _config(tmp_path, tiny_model_dir, "one", batch=4, accumulation=1, **adamw)]) == 0

    out = tmp_path / "ds"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["num_processes"] == 2 and manifest["distributed_type"] == "DEEPSPEED"
    assert manifest["device"] == "cpu" and manifest["mixed_precision"] == "no"
    w2, w1 = weights(out / "model"), weights(tmp_path / "one" / "model")
    for name in w1:
        assert w2[name].dtype == torch.float32
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-6)
    log = (out / "metrics.jsonl").read_text()
    logs = [[json.loads(x) for x in text.splitlines()] for text in (log, (tmp_path / "one" / "metrics.jsonl").read_text())]
    assert [r["tokens"] for r in logs[0]] == [r["tokens"] for r in logs[1]]
    assert abs(logs[0][-1]["eval_loss"] - logs[1][-1]["eval_loss"]) < 1e-5
    step1 = out / "checkpoints" / "checkpoint-1"
    files = {p.name for p in step1.iterdir()}
    assert {"pytorch_model", "rng_0.json", "rng_1.json", "scheduler.json", "trainer_state.json", "checkpoint.json"} <= files
    assert not any(name.endswith(".pkl") for name in files)

    # lose step 2 and the final model, then resume from the step-1 checkpoint (ZeRO shards, optimizer, RNG)
    shutil.rmtree(out / "checkpoints" / "checkpoint-2")
    shutil.rmtree(out / "model")
    assert main([*launch, "--resume", "auto"]) == 0, capfd.readouterr().err[-3000:]
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["resumed_from"] == str(step1) and manifest["status"] == "done"
    resumed = weights(out / "model")
    assert resumed.keys() == w2.keys() and all(torch.equal(resumed[k], w2[k]) for k in w2)
    assert (out / "metrics.jsonl").read_text() == log


@pytest.mark.slow
def test_compiled_layers_under_zero3_match_one_eager_process(tmp_path, tiny_model_dir, weights, capfd, alpaca_seed,
                                                             repo_root):
    """compile.layers with ZeRO-3 (parameters gathered by hooks around the compiled layers) on 2 CPU processes."""
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed (./scripts/setup.sh --extra deepspeed)")
    pytest.importorskip("oa_kernels", reason="compile.layers is an oa-kernels patch")
    _write_data(tmp_path, alpaca_seed)
    adamw = {"optimizer": "adamw", "learning_rate": 1e-3}
    zero3 = str(repo_root / "examples" / "configs" / "accelerate" / "zero3.yaml")
    ds = _config(tmp_path, tiny_model_dir, "ds", batch=1, accumulation=2, **adamw)
    assert main(["train", ds, "--num-processes", "2", "--accelerate-config", zero3,
                 "--set", "model.patches=[compile.layers]"]) == 0, capfd.readouterr().err[-3000:]
    assert main(["train", _config(tmp_path, tiny_model_dir, "one", batch=4, accumulation=1, **adamw)]) == 0
    assert "layers compiled" in (tmp_path / "ds" / "run_manifest.json").read_text()
    w2, w1 = weights(tmp_path / "ds" / "model"), weights(tmp_path / "one" / "model")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-6)


def test_a_user_error_in_the_workers_is_one_line_once(tmp_path, tiny_model_dir, alpaca_seed, capfd):
    """Every worker hits the same data error (every sample too long): one line, exit 2, no launcher traceback."""
    _write_data(tmp_path, alpaca_seed)
    cfg = _config(tmp_path, tiny_model_dir, "lossy", batch=1, accumulation=1)
    assert main(["train", cfg, "--num-processes", "2", "--set", "data.max_length=40"]) == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: train data: every sample was dropped"), err[-2000:]
    assert "Traceback" not in err and "ChildFailedError" not in err


def test_the_relay_keeps_worker_output_and_tracebacks_but_not_the_launchers_report():
    import io

    from oa_train.launch import relay_stderr

    worker = b"sft:  50%|#####     | 1/2\rsft: 100%|##########| 2/2\n"
    own = b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: a bug\n"
    launcher = (b"E1130 16:11:17.275000 6785 /x/torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1)\n"
                b"Traceback (most recent call last):\n  File \"/x/accelerate/commands/launch.py\", line 1423, in <module>\n"
                b"torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n====\noa_cli.main FAILED\n"
                b"Root Cause (first observed failure):\n  time : 2026\n")
    out, report = io.BytesIO(), bytearray()
    relay_stderr(io.BytesIO(worker + own + launcher), out, report=report)
    assert out.getvalue() == worker + own
    assert report.startswith(b"Traceback") and report.endswith(b"  time : 2026\n")


KILLED = b"""torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 10586)  (SIGTERM)
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_21:49:55
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 10587)  (SIGKILL)
  traceback : Signal 9 (SIGKILL) received by PID 10587
"""


def test_the_worker_whose_signal_stopped_the_run_is_read_from_the_launchers_report():
    from oa_train.launch import killed_worker

    assert killed_worker(KILLED) == (1, "SIGKILL")
    assert killed_worker(KILLED.replace(b"exitcode  : -9", b"exitcode  : 1")) is None  # failed, not killed
    assert killed_worker(b"") is None


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    from pathlib import Path

    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        children = [c for c, pp in parent.items() if pp == p]
        found += children
        todo += children
    return found


def _worker_of_rank(launcher: int, rank: int) -> int | None:
    from pathlib import Path

    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"OA_LAUNCHED=1" in env and f"RANK={rank}".encode() in env:
            return pid
    return None


@pytest.mark.slow
@pytest.mark.parametrize("preset", [None, "zero3"])
def test_a_worker_killed_mid_run_resumes_to_the_uninterrupted_result(preset, tmp_path, tiny_model_dir, weights, capfd,
                                                                     alpaca_seed, repo_root):
    """SIGKILL to one of two workers once checkpoint 2 exists (DDP, and ZeRO-3 with its sharded checkpoints): every
    checkpoint left verifies (none half-written), and `--resume auto` ends with the weights and the logged losses
    of a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from oa_train.training.checkpoint import verify

    if preset:
        pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed (./scripts/setup.sh --extra deepspeed)")
    launch = ["--num-processes", "2"]
    if preset:
        launch += ["--accelerate-config", str(repo_root / "examples" / "configs" / "accelerate" / f"{preset}.yaml")]
    _write_data(tmp_path, alpaca_seed)
    train = dict(max_steps=30, optimizer="adamw", learning_rate=1e-3, save_steps=1, save_total_limit=3, eval_steps=None)
    assert main(["train", _config(tmp_path, tiny_model_dir, "whole", batch=1, accumulation=2, **train),
                 *launch]) == 0, capfd.readouterr().err[-3000:]

    cfg = _config(tmp_path, tiny_model_dir, "killed", batch=1, accumulation=2, **train)
    out = tmp_path / "killed"
    with open(tmp_path / "killed.err", "wb") as err:
        launcher = subprocess.Popen([sys.executable, "-m", "oa_cli.main", "train", cfg, *launch],
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline, victim = time.monotonic() + 240, None
            while victim is None and time.monotonic() < deadline and launcher.poll() is None:
                if (out / "checkpoints" / "checkpoint-2").is_dir():
                    victim = _worker_of_rank(launcher.pid, 1)
                time.sleep(0.02)
            assert victim is not None, (tmp_path / "killed.err").read_text()[-3000:]
            os.kill(victim, signal.SIGKILL)
            code = launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
    assert code == 2 and not (out / "model").exists()  # killed before the end
    err = (tmp_path / "killed.err").read_text()
    assert err.rstrip().splitlines()[-1] == ("error: worker rank 1 was killed (SIGKILL) and the other workers "
                                             "stopped with it (hint: checkpoints are written whole or not at all: "
                                             "continue with --resume auto)"), err[-2000:]
    left = sorted(p for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint-"))
    assert left and all(verify(p) is None for p in left)  # only whole checkpoints under their final names

    assert main(["train", cfg, *launch, "--resume", "auto"]) == 0, capfd.readouterr().err[-3000:]
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["resumed_from"] in {str(p) for p in left}
    whole, resumed = weights(tmp_path / "whole" / "model"), weights(out / "model")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()
