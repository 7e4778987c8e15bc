"""Stream an OASST export into a JSONL file of core records (``model_dump`` rows with ``kind``)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from oa_core.errors import OAError
from oa_oasst.formats import iter_records
from oa_oasst.options import FilterOptions
from oa_oasst.summary import Summary


def export(src: str, dst: str, kind: str, options: FilterOptions, progress: bool = False) -> Summary:
    """Write the records of ``src`` to ``dst`` atomically (temp file beside it, renamed at the end)."""
    summary = Summary(source=str(src), warn=progress)
    try:
        _write(src, Path(dst), kind, options, summary, progress)
    except OSError as e:
        raise OAError(f"{e.filename or dst}: {e.strerror or e}", hint="check the paths and permissions") from None
    return summary


def _write(src: str, out: Path, kind: str, options: FilterOptions, summary: Summary, progress: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in iter_records(src, kind, options, summary, progress):
                f.write(json.dumps(record.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
