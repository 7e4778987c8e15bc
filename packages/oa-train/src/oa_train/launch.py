"""Multi-process runs: ``oa train --num-processes N`` re-runs the same command under ``accelerate launch``.

Each worker runs ``python -m oa_cli.main train ...`` with ``OA_LAUNCHED=1`` (so it trains instead of
launching again). ``--accelerate-config`` picks a preset (DDP, DeepSpeed ZeRO-2/3, FSDP: see
``examples/configs/accelerate/``); without a GPU the workers run on CPU (torchrun + ``ACCELERATE_USE_CPU``, gloo backend).
accelerate drops DeepSpeed and FSDP under ``ACCELERATE_USE_CPU`` (plain DDP instead), so a DeepSpeed preset runs
without it: DeepSpeed's CPU accelerator, over gloo (``run_sft`` names the backend). FSDP needs GPUs.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
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


def check_gpus(num_processes: int) -> None:
    """One process per GPU: asking for more processes than this machine has GPUs is refused (the extra workers
    would die with "GPU device may be out of range"). Without a GPU the workers run on the CPU."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if 0 < gpus < num_processes:
        raise OAError(f"--num-processes {num_processes}: this machine has {gpus} GPU{'s' if gpus > 1 else ''}",
                      hint=f"use --num-processes {gpus} or fewer (one process per GPU)")


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


def launch(target: list[str], *, num_processes: int, accelerate_config: str | None = None,
           env: dict | None = None) -> int:
    """Run the workers and wait; returns the exit code of ``accelerate launch``. A user error in the workers
    (``OAError``) becomes one :class:`OAError` here (from the lowest rank that had one), without the launcher's
    report of the failed workers; so does a worker killed by a signal (``kill -9``, the out-of-memory killer),
    named with its rank, as the launcher's report has it."""
    from oa_cli.main import ERROR_FILE_ENV

    cmd = launch_command(target, num_processes=num_processes, accelerate_config=accelerate_config)
    with tempfile.TemporaryDirectory(prefix="oa-launch-") as folder:
        errors = Path(folder) / "error"
        proc = subprocess.Popen(cmd, env={**(env or launch_env(accelerate_config)), ERROR_FILE_ENV: str(errors)},
                                stderr=subprocess.PIPE)
        report = bytearray()
        relay_stderr(proc.stderr, sys.stderr.buffer, lambda: any(Path(folder).glob("error.*")), report)
        code = proc.wait()
        reported = sorted(Path(folder).glob("error.*"), key=lambda p: int(p.suffix[1:]))
        if reported:
            raise OAError(reported[0].read_text(encoding="utf-8"))
    killed = killed_worker(bytes(report)) if code else None
    if killed:
        rank, signal = killed
        raise OAError(f"worker rank {rank} was killed ({signal}) and the other workers stopped with it",
                      hint="checkpoints are written whole or not at all: continue with --resume auto")
    return code


LAUNCHER_LOG = re.compile(rb"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ .*torch/distributed/")
RANK_PREFIX = re.compile(rb"^\[rank\d+\]: ?")


def relay_stderr(source, sink, user_error=lambda: False, report: bytearray | None = None) -> None:
    """Copy the workers' stderr as it comes (progress bars included), leaving out what torch's launcher reports
    about failed workers (its log lines, and its ``ChildFailedError`` report, the last thing it prints: kept in
    ``report``) and, once a worker has reported a user error (``user_error()``), the tracebacks of the workers that
    failed with it."""
    report = bytearray() if report is None else report
    held: list[bytes] = []  # a traceback block, until we know whose it is
    launcher_report = False
    for line in iter(source.readline, b""):
        if launcher_report:
            report += line
            continue
        bare = RANK_PREFIX.sub(b"", line)
        if bare.startswith(b"Traceback (most recent call last):") or held:
            held.append(line)
            if bare[:1] not in (b" ", b"T", b"\n", b""):  # the exception line ends the block
                launcher_report = _is_launcher(held)
                if launcher_report:
                    report += b"".join(held)
                elif not user_error():
                    sink.write(b"".join(held))
                    sink.flush()
                held = []
            continue
        if not LAUNCHER_LOG.match(line) and not (user_error() and RANK_PREFIX.match(line)):
            sink.write(line)
            sink.flush()
    if held and not _is_launcher(held) and not user_error():
        sink.write(b"".join(held))
        sink.flush()


ROOT_CAUSE = re.compile(rb"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*-(\d+)", re.S)


def killed_worker(report: bytes) -> tuple[int, str] | None:
    """``(rank, signal name)`` of the worker whose death stopped the run, when a signal killed it (torch's launcher
    report: its "Root Cause" entry with a negative exit code); None otherwise."""
    import signal

    found = ROOT_CAUSE.search(report)
    if not found:
        return None
    number = int(found.group(2))
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return int(found.group(1)), name


def _is_launcher(block: list[bytes]) -> bool:
    text = b"".join(block)
    return any(marker in text for marker in (b"ChildFailedError", b"torch/distributed/elastic", b"accelerate/commands/launch.py"))
