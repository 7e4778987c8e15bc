"""Run logs: ``metrics.jsonl`` and ``loss_curve.png`` in the output folder, accelerate trackers
(tensorboard, wandb, mlflow) for ``report_to``, and one stdout line per logging step."""

from __future__ import annotations

import json
import math
from pathlib import Path

from oa_core.errors import OAError
from oa_core.io import atomic_path, atomic_write_text

TRACKERS = ("tensorboard", "wandb", "mlflow")


def trackers(report_to: list[str]) -> list[str] | None:
    """``log_with`` for the Accelerator; a one-line error when a tracker's package is missing."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    names = [r for r in report_to if r != "none"]
    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
    for name in names:
        if not available[name]():
            raise OAError(f"train.report_to: '{name}' is not installed", hint=f"pip install {name}, or report_to: none")
    return names or None


class RunLog:
    """The history of logged records (train and eval), persisted as jsonl and plotted."""

    def __init__(self, output_dir: str | Path, history: list[dict] | None = None):
        self.dir = Path(output_dir)
        self.history = list(history or [])

    def add(self, record: dict) -> None:
        self.history.append(record)
        text = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_text(self.dir / "metrics.jsonl", text)

    def add_generations(self, step: int, samples: list[dict]) -> None:
        """Append the eval generations of ``step`` to ``generations.jsonl`` and show the first one."""
        path = self.dir / "generations.jsonl"
        old = path.read_text().splitlines(keepends=True) if path.exists() else []
        kept = [line for line in old if json.loads(line)["step"] < step]  # a resumed run rewrites its steps
        new = [json.dumps({"step": step, **sample}) + "\n" for sample in samples]
        atomic_write_text(path, "".join(kept + new))
        if samples:
            from tqdm.auto import tqdm

            tqdm.write(f"step {step} sample: {samples[0]['prediction'][:120]!r} (reference {samples[0]['reference'][:60]!r})")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in self.history if key in r and math.isfinite(r[key])]
        return [s for s, _ in pts], [v for _, v in pts]

    def plot(self, name: str = "loss_curve.png", unit: str = "tokens") -> Path:
        """Train and eval loss per ``unit``; accuracies (``accuracy``, ``eval_accuracy``), when logged, on a
        second axis."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for key, style in (("loss", "-"), ("eval_loss", "o-")):
            xs, ys = self.series(key)
            if xs:
                ax.plot(xs, ys, style, label=key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"loss (per {'supervised token' if unit == 'tokens' else unit.removesuffix('s')})")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        accuracies = [(key, *self.series(key)) for key in ("accuracy", "eval_accuracy") if self.series(key)[0]]
        if accuracies:
            right = ax.twinx()
            for key, xs, ys in accuracies:
                right.plot(xs, ys, "--" if key == "accuracy" else "s--", color="tab:green", label=key)
            right.set_ylabel("accuracy")
            h, lab = right.get_legend_handles_labels()
            handles, labels = handles + h, labels + lab
        ax.legend(handles, labels)
        fig.tight_layout()
        path = self.dir / name
        try:
            with atomic_path(path, suffix=".png") as tmp:
                fig.savefig(tmp)
        finally:
            plt.close(fig)
        return path
