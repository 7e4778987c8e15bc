"""The output folder of a run: oa writes only into a new or empty folder or one of its own runs (marked by
``.oa-run``), never over an input, and one run at a time (an exclusive lock, released when the process ends,
also by a crash or a kill)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from oa_core.errors import OAError
from oa_core.io import atomic_write_text, refuse_input_as_output

MARKER = ".oa-run"
LOCK = ".oa-run.lock"
LOCK_ENV = "OA_RUN_LOCKED"  # set for worker processes when the launching `oa train` holds the lock


def check_output_dir(cfg) -> None:
    """Refuse an output folder oa must not write into (read-only: nothing is created here)."""
    out = Path(cfg.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OAError(f"output_dir: {out} is a file, not a folder", hint="choose a new folder for the run")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name != LOCK)
        if others and not is_run_folder(out):
            raise OAError(f"output_dir: {out} is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
                          f"and is not an oa run folder (no {MARKER})",
                          hint="choose a new or empty folder: oa writes only into its own run folders")
    inputs = {"model.path": cfg.model.path if cfg.model else None,
              "model.adapter_path": cfg.model.adapter_path if cfg.model else None, "tokenizer.path": cfg.tokenizer.path}
    inputs |= {f"{group}.{i}.path": spec.path for group in ("datasets", "eval_datasets")
               for i, spec in enumerate(getattr(cfg, group))}
    inputs = {k: v for k, v in inputs.items() if v}
    refuse_input_as_output(out / "model", inputs)
    refuse_input_as_output(out, inputs)


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` was written by oa (its marker, or the manifest of a run from before the marker)."""
    if (out / MARKER).is_file():
        return True
    try:
        return "method" in json.loads((out / "run_manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def mark_run_folder(out: Path) -> None:
    from oa_core import __version__

    if not (out / MARKER).is_file():
        atomic_write_text(out / MARKER, json.dumps({"oa": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))


class RunLock:
    """An exclusive lock on ``output_dir`` for the lifetime of a run (``with RunLock(path): ...``)."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out).expanduser() / LOCK
        self.file = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "?"
            self.file.close()
            raise OAError(f"output_dir: {self.path.parent} is in use by another run (process {holder})",
                          hint="wait until it ends, or choose another output_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def lock_held_by_launcher() -> bool:
    return os.environ.get(LOCK_ENV) == "1"
