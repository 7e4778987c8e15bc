"""Checkpoints: ``output_dir/checkpoints/checkpoint-<step>``, written atomically, pruned to the best K.

A checkpoint is ``accelerator.save_state`` (weights, optimizer, registered scheduler, RNG of every rank,
sharded for FSDP/DeepSpeed) plus ``trainer_state.json``. It is written into ``.checkpoint-<step>.tmp``
and renamed when complete, so a kill at any moment leaves either a whole checkpoint or an ignored temp
folder. Pruning keeps the latest checkpoint (for resume) plus the ``limit`` best by the chosen metric
(or the ``limit`` latest when no checkpoint has the metric).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from oa_core.errors import OAError
from oa_core.io import atomic_write_text

STATE_FILE = "trainer_state.json"
PREFIX = "checkpoint-"


class Checkpoints:
    def __init__(self, output_dir: str | Path, *, limit: int | None, metric: str, greater_is_better: bool):
        self.root = Path(output_dir) / "checkpoints"
        self.limit, self.metric, self.greater = limit, metric, greater_is_better

    def save(self, accelerator, step: int, state: dict) -> Path:
        final, tmp = self.root / f"{PREFIX}{step}", self.root / f".{PREFIX}{step}.tmp"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self.prune()
        accelerator.wait_for_everyone()
        return final

    def list(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            step = p.name.removeprefix(PREFIX)
            if p.name.startswith(PREFIX) and step.isdigit() and (p / STATE_FILE).is_file():
                found.append((int(step), p))
        return sorted(found)

    def _value(self, path: Path) -> float | None:
        return read_state(path).get("metrics", {}).get(self.metric)

    def best(self) -> Path | None:
        scored = [(v, p) for _, p in self.list() if (v := self._value(p)) is not None]
        if not scored:
            return None
        return (max if self.greater else min)(scored, key=lambda vp: vp[0])[1]

    def prune(self) -> list[Path]:
        ckpts = [p for _, p in self.list()]
        if self.limit is None or len(ckpts) <= self.limit:
            return []
        scored = [(v, p) for p in ckpts if (v := self._value(p)) is not None]
        if scored:
            ranked = [p for _, p in sorted(scored, key=lambda vp: vp[0], reverse=self.greater)]
        else:
            ranked = list(reversed(ckpts))
        keep = set(ranked[: self.limit]) | {ckpts[-1]}
        removed = [p for p in ckpts if p not in keep]
        for p in removed:
            shutil.rmtree(p)
        return removed

    def resolve(self, resume_from: str | None) -> Path | None:
        """The checkpoint to resume from: ``"auto"`` = the latest one (None if there is none)."""
        if resume_from is None:
            return None
        if resume_from == "auto":
            ckpts = self.list()
            return ckpts[-1][1] if ckpts else None
        path = Path(resume_from)
        if not (path / STATE_FILE).is_file():
            raise OAError(
                f"train.resume_from: '{resume_from}' is not a complete checkpoint (no {STATE_FILE})",
                hint=f"use 'auto' or a folder under {self.root}",
            )
        return path


def read_state(path: Path) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))
