"""A tidy terminal for a run: what the libraries warn about and their progress bars stay off it — the warnings go
to ``output_dir/logs/libraries.log`` and the end of the run says how many there were —, every
step prints lines of at most :data:`WIDTH` columns, and the run ends with a summary."""

from __future__ import annotations

import logging
import os
from pathlib import Path

WIDTH = 120
LIBRARIES = ("transformers", "accelerate", "datasets", "peft", "huggingface_hub", "torch", "DeepSpeed", "py.warnings")
SHORT = {"epoch": "ep", "accuracy": "acc", "grad_norm": "gnorm", "skipped_steps": "skipped"}


class _Collect(logging.Handler):
    """Keeps formatted records until :meth:`LibraryLog.to_file` names the file, then appends to it."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.path: Path | None = None
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        line = self.format(record) + "\n"
        if self.path is None:
            self.lines.append(line)
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


class LibraryLog:
    """While active, library loggers and Python warnings write to this collector instead of the terminal, and
    library progress bars are off; everything is restored on exit (runs in notebooks and tests)."""

    def __enter__(self) -> LibraryLog:
        self.handler = _Collect()
        self._saved = []
        _configure_library_loggers()
        for name in LIBRARIES:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
            logger.handlers, logger.propagate = [self.handler], False
            logger.setLevel(logging.WARNING)
        logging.captureWarnings(True)
        self._bars = _progress_bars(False)
        if "DS_ACCELERATOR" not in os.environ and not _cuda():
            os.environ["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's "unable to detect an accelerator" notice
            self._ds_env = True
        return self

    def to_file(self, path: Path) -> None:
        """From now on (and what was collected so far) into ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(self.handler.lines)
        self.handler.lines, self.handler.path = [], path

    @property
    def count(self) -> int:
        return self.handler.count

    @property
    def path(self) -> Path | None:
        return self.handler.path

    def __exit__(self, *exc) -> None:
        logging.captureWarnings(False)
        for logger, handlers, propagate, level in self._saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        _progress_bars(self._bars)
        if getattr(self, "_ds_env", False):
            os.environ.pop("DS_ACCELERATOR", None)


def _configure_library_loggers() -> None:
    """transformers and datasets attach their console handlers lazily: let them do it now, to replace it."""
    for module in ("transformers.utils.logging", "datasets.utils.logging"):
        try:
            __import__(module, fromlist=["get_verbosity"]).get_verbosity()
        except ImportError:
            pass


def _progress_bars(enable: bool) -> bool:
    """Switch the libraries' progress bars; returns whether they were on before."""
    was = True
    try:
        import datasets

        was = datasets.is_progress_bar_enabled()
        datasets.enable_progress_bars() if enable else datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.enable_progress_bar() if enable else hf_logging.disable_progress_bar()
    except ImportError:
        pass
    return was


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def format_record(record: dict, total_steps: int) -> str:
    """One line for the step's training values and one for its evaluation, each at most :data:`WIDTH` columns."""
    train = [f"step {record['step']}/{total_steps}"]
    for key, value in record.items():
        if key == "step" or key.startswith("eval_") or (key == "skipped_steps" and not value):
            continue
        train.append(f"{SHORT.get(key, key)} {_number(value)}")
    lines = ["  ".join(train)] if len(train) > 1 else []
    evals = [f"{k.removeprefix('eval_')} {_number(v)}" for k, v in record.items() if k.startswith("eval_")]
    if evals:
        lines.append(f"  eval @{record['step']}: " + "  ".join(evals))
    return "\n".join(line if len(line) <= WIDTH else line[: WIDTH - 1] + "…" for line in lines)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(*, out: Path, steps: int, seconds: float, tokens: int, metrics: dict, best: Path | None,
            metric: str, library_log: LibraryLog | None) -> list[str]:
    """The lines that end a run: where the model is, the final and best evaluation, time and throughput."""
    minutes, secs = divmod(int(round(seconds)), 60)
    lines = [f"done: {steps} steps in {minutes}m{secs:02d}s, {tokens:,} tokens ({tokens / max(seconds, 1e-9):,.0f} tokens/s)",
             f"  model: {out / 'model'}"]
    if metrics:
        lines.append("  final eval: " + "  ".join(f"{k.removeprefix('eval_')} {_number(v)}" for k, v in metrics.items()))
    if best is not None:
        lines.append(f"  best checkpoint by {metric}: {best}")
    if library_log is not None and library_log.count and library_log.path is not None:
        lines.append(f"  library warnings: {library_log.count} (in {library_log.path})")
    return lines
