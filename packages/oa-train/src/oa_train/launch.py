"""Multi-process runs: ``oa train --num-processes N`` re-runs the same command under ``accelerate launch``.

Each worker runs ``python -m oa_cli.main train ...`` with ``OA_LAUNCHED=1`` (so it trains instead of
launching again). ``--accelerate-config`` picks a preset (DDP, DeepSpeed ZeRO-2/3, FSDP: see
``examples/configs/accelerate/``); without a GPU the workers run on CPU (torchrun + ``ACCELERATE_USE_CPU``, gloo backend).
accelerate drops DeepSpeed and FSDP under ``ACCELERATE_USE_CPU`` (plain DDP instead), so a DeepSpeed preset runs
without it: DeepSpeed's CPU accelerator, over gloo (``run_sft`` names the backend). FSDP needs GPUs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from oa_core.errors import OAError

LAUNCHED_ENV = "OA_LAUNCHED"


def in_worker() -> bool:
    """True inside a process started by ``accelerate launch``/``torchrun`` (never launch from there)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(target: list[str], *, num_processes: int, accelerate_config: str | None = None) -> list[str]:
    """``accelerate launch ... TARGET`` (TARGET: ``["-m", module, args...]`` or ``[script, args...]``)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        cmd += ["--config_file", accelerate_config]
    cmd += ["--num_processes", str(num_processes), "--num_machines", "1", "--main_process_port", str(free_port())]
    if not accelerate_config:
        cmd += ["--multi_gpu"] if num_processes > 1 else []  # torchrun; on CPU with ACCELERATE_USE_CPU (gloo)
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*cmd, *target]


def preset_type(accelerate_config: str | None) -> str | None:
    """The accelerate config file's ``distributed_type`` (YAML or JSON), or None without one."""
    if not accelerate_config:
        return None
    from oa_core.config import read_config_file

    return read_config_file(Path(accelerate_config)).get("distributed_type")


def launch_env(accelerate_config: str | None = None) -> dict[str, str]:
    import torch

    from oa_train.training.output_dir import LOCK_ENV

    env = {**os.environ, LAUNCHED_ENV: "1", LOCK_ENV: "1"}
    kind = preset_type(accelerate_config)
    if not torch.cuda.is_available():
        if kind == "FSDP":
            raise OAError(f"{accelerate_config}: FSDP runs on GPUs only (accelerate would train plain DDP on CPU)",
                          hint="without a GPU use examples/configs/accelerate/ddp.yaml, or a DeepSpeed preset")
        if kind != "DEEPSPEED":
            env["ACCELERATE_USE_CPU"] = "true"  # `accelerate launch --cpu` would start a single process
    return env


def launch(target: list[str], *, num_processes: int, accelerate_config: str | None = None, env: dict | None = None,
           **run_kwargs):
    """Run the workers and wait; returns the ``subprocess.CompletedProcess`` of ``accelerate launch``."""
    cmd = launch_command(target, num_processes=num_processes, accelerate_config=accelerate_config)
    return subprocess.run(cmd, env=env or launch_env(accelerate_config), **run_kwargs)
