"""Checkpoints: ``output_dir/checkpoints/checkpoint-<step>``, written atomically and verified on resume.

A checkpoint holds the run's resumable state (:mod:`~oa_train.training.state`: no pickles), the loop's
``trainer_state.json`` and, written last, ``checkpoint.json``: the size and SHA-256 of every file. It is written
into ``.checkpoint-<step>.tmp``, every file and the folder are fsynced, and only then is it renamed, so a kill
or a crash at any moment leaves a whole checkpoint or an ignored temp folder. A disk that fills up mid-write
loses nothing but the unfinished checkpoint.

Resume verifies a checkpoint against its ``checkpoint.json`` (sizes, checksums, no file it does not list,
e.g. a planted pickle); ``auto`` falls back to the newest checkpoint that verifies, with a warning. Pruning keeps
the latest checkpoint (for resume) plus the ``limit`` best by the chosen metric (or the ``limit`` latest when no
checkpoint has the metric).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from oa_core.errors import OAError
from oa_core.io import atomic_write_text, follow_umask

STATE_FILE = "trainer_state.json"
MANIFEST = "checkpoint.json"
PREFIX = "checkpoint-"
FULL = (errno.ENOSPC, errno.EDQUOT)


class Checkpoints:
    def __init__(self, output_dir: str | Path, *, limit: int | None, metric: str, greater_is_better: bool):
        self.root = Path(output_dir) / "checkpoints"
        self.limit, self.metric, self.greater = limit, metric, greater_is_better

    def save(self, accelerator, step: int, state: dict, write_state) -> Path:
        """Write checkpoint ``step``: ``write_state(folder)`` on every process (the run's resumable state), then
        ``state`` as ``trainer_state.json`` and the manifest. A full disk is one :class:`OAError` on every rank."""
        final, tmp = self.root / f"{PREFIX}{step}", self.root / f".{PREFIX}{step}.tmp"
        main = accelerator.is_main_process
        error = None
        try:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
        except OSError as e:
            error = e
        error = _agree(accelerator, error)
        if error is None:
            try:
                write_state(tmp)
            except OSError as e:
                error = e
            error = _agree(accelerator, error)
        if error is None and main:
            try:
                atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=1))
                follow_umask(tmp)  # safetensors writes its files 0600
                write_manifest(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                _fsync_dir(self.root)
            except OSError as e:
                error = e
        error = _agree(accelerator, error)
        if error is not None:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise self._write_error(final, error)
        if main:
            self.prune()
        accelerator.wait_for_everyone()
        return final

    def _write_error(self, final: Path, error: OSError) -> OSError | OAError:
        if error.errno not in FULL:
            return error
        last = self.list()
        where = f"the last complete checkpoint is {last[-1][1]}" if last else "no checkpoint was completed"
        return OAError(f"no space left on device while writing {final} ({where})",
                       hint="free space (or choose another output_dir), then continue with --resume auto")

    def list(self) -> list[tuple[int, Path]]:
        """Checkpoints whose manifest was written (complete), oldest first; not yet verified."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            step = p.name.removeprefix(PREFIX)
            if p.name.startswith(PREFIX) and step.isdigit() and (p / MANIFEST).is_file():
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
        """The checkpoint to resume from, verified: ``"auto"`` = the newest that verifies (None if there is
        none; damaged newer ones are named in a warning), or a given folder (a one-line error if damaged)."""
        if resume_from is None:
            return None
        if resume_from == "auto":
            found = self.list()
            for _, path in reversed(found):
                problem = verify(path)
                if problem is None:
                    return path
                print(f"warning: skipping damaged checkpoint {path}: {problem}", file=sys.stderr)
            if found:
                raise OAError(f"train.resume_from: auto: no checkpoint in {self.root} verifies (see the warnings)",
                              hint="restore them, or move them away to start the run again")
            return None
        path = Path(resume_from)
        if not (path / MANIFEST).is_file():
            raise OAError(
                f"train.resume_from: '{resume_from}' is not a complete checkpoint (no {MANIFEST})",
                hint=f"use 'auto' or a folder under {self.root}",
            )
        problem = verify(path)
        if problem is not None:
            raise OAError(f"train.resume_from: checkpoint '{resume_from}' is damaged: {problem}",
                          hint="resume from an earlier checkpoint, or with 'auto' (the newest that verifies)")
        return path


def read_state(path: Path) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))


def write_manifest(folder: Path) -> None:
    """fsync every file of ``folder`` and the folder, then write ``checkpoint.json`` (sizes, SHA-256) last."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
            files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size,
                                                          "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
    for sub in sorted({p.parent for p in folder.rglob("*") if p.is_file()}):
        _fsync_dir(sub)
    atomic_write_text(folder / MANIFEST, json.dumps({"format": 1, "files": files}, indent=1))
    _fsync_dir(folder)


def verify(folder: Path) -> str | None:
    """Why ``folder`` does not match its manifest (a missing, changed or unlisted file), or None."""
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} unreadable ({type(e).__name__})"
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    unlisted = sorted(present - set(listed))
    if unlisted:
        return f"{unlisted[0]} is not listed in {MANIFEST} (a file this run did not write)"
    for name, want in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["size"]:
            return f"{name} has {path.stat().st_size} bytes, {want['size']} were written"
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != want["sha256"]:
                return f"{name} changed after it was written (checksum)"
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _agree(accelerator, error: OSError | None) -> OSError | None:
    """The error of any process, seen by every process (so all stop together instead of waiting forever)."""
    if accelerator.num_processes == 1:
        return error
    failed = torch.tensor([0 if error is None else 1], device=accelerator.device)
    if int(accelerator.reduce(failed, reduction="sum").item()) == 0:
        return None
    return error or OSError(errno.EIO, "another process failed to write its part of the checkpoint")
