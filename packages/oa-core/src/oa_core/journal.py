"""A jsonl file that is its own journal (``oa infer``'s outputs, ``oa augment``'s work log): records are
appended, flushed and fsynced one batch at a time, so a process killed at any moment (kill -9 included) leaves
whole records plus at most one cut-off last line, which the next run drops before it appends. Every record
carries the ``index`` of its input, so a restart skips the inputs already done: no record is lost or written
twice."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oa_core.errors import OAError


class Journal:
    """``done`` maps the input index of every whole record already in ``path`` to (its line number, the record);
    :meth:`append` adds records durably. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, what: str = "an output of oa infer"):
        self.path = Path(path)
        self.what = what  # what such a file is, for the error about one that is not
        self.done: dict[int, tuple[int, dict[str, Any]]] = {}
        self.dropped_bytes = 0  # a cut-off last line left by a killed run
        self._file = None
        self._lines = 0

    def __enter__(self) -> Journal:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the process ends
        except BlockingIOError:
            self.__exit__()
            raise OAError(f"{self.path}: another process is writing this output",
                          hint="wait for it to finish, or choose another output path") from None
        if new:
            _fsync_dir(self.path.parent)
        else:
            self._recover()
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records`` (one line each) and make them durable before returning."""
        lines = []
        for record in records:
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            self._lines += 1
            self.done[record["index"]] = (self._lines, record)
        self._file.write("".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _recover(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # bytes after the last newline: a line cut off by a kill
        if end < len(data):
            self.dropped_bytes = len(data) - end
            os.truncate(self.path, end)
        for number, line in enumerate(data[:end].splitlines(), start=1):
            self._lines = number
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise OAError(f"{self.path}:{number}: not a JSON record ({e}); the output is damaged",
                              hint="move the file away to start over") from None
            index = record.get("index") if isinstance(record, dict) else None
            if not isinstance(index, int) or isinstance(index, bool):
                raise OAError(f"{self.path}:{number}: field 'index': missing or not an integer; this is not "
                              f"{self.what}", hint="choose another output path")
            if index in self.done:
                raise OAError(f"{self.path}:{number}: input {index} is already on line {self.done[index][0]}",
                              hint="the file was edited or written by two runs at once; move it away to start over")
            self.done[index] = (number, record)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
