"""Stream an OASST export into a JSONL file of core records (``model_dump`` rows with ``kind``)."""

from __future__ import annotations

import json
from pathlib import Path

from oa_core.errors import OAError
from oa_core.io import atomic_open, refuse_input_as_output
from oa_oasst.formats import iter_records
from oa_oasst.options import FilterOptions
from oa_oasst.summary import Summary


def export(src: str, dst: str, kind: str, options: FilterOptions, progress: bool = False) -> Summary:
    """Write the records of ``src`` to ``dst`` atomically (temp file beside it, renamed at the end).

    Refuses (:class:`OAError`) when ``dst`` is ``src``, also through another path or a link.
    """
    refuse_input_as_output(dst, {"IN": src})
    summary = Summary(source=str(src), warn=progress)
    try:
        _write(src, Path(dst), kind, options, summary, progress)
    except OSError as e:
        raise OAError(f"{e.filename or dst}: {e.strerror or e}", hint="check the paths and permissions") from None
    return summary


def _write(src: str, out: Path, kind: str, options: FilterOptions, summary: Summary, progress: bool) -> None:
    with atomic_open(out) as f:
        for record in iter_records(src, kind, options, summary, progress):
            f.write(json.dumps(record.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n")
