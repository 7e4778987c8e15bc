"""Multi-process runs: ``oa train --num-processes N`` re-runs the same command under ``accelerate launch``.

Each worker runs ``python -m oa_cli.main train ...`` with ``OA_LAUNCHED=1`` (so it trains instead of
launching again). ``--accelerate-config`` picks a preset (DDP, DeepSpeed ZeRO-2/3, FSDP: see
``examples/configs/accelerate/``); without a GPU the workers run on CPU with the gloo backend.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

LAUNCHED_ENV = "OA_LAUNCHED"


def in_worker() -> bool:
    """True inside a process started by ``accelerate launch``/``torchrun`` (never launch from there)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(worker_args: list[str], *, num_processes: int, accelerate_config: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        cmd += ["--config_file", accelerate_config]
    cmd += ["--num_processes", str(num_processes), "--num_machines", "1", "--main_process_port", str(free_port())]
    if not accelerate_config:
        import torch

        cmd += ["--multi_gpu"] if torch.cuda.is_available() and num_processes > 1 else ["--cpu"]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*cmd, "-m", "oa_cli.main", "train", *worker_args]


def launch(worker_args: list[str], *, num_processes: int, accelerate_config: str | None = None) -> int:
    """Run the workers and wait; returns the exit code of ``accelerate launch``."""
    env = {**os.environ, LAUNCHED_ENV: "1"}
    cmd = launch_command(worker_args, num_processes=num_processes, accelerate_config=accelerate_config)
    return subprocess.run(cmd, env=env).returncode
