"""Mix several loaded sources into one list of records.

Per source: ``num_samples`` takes exactly that many records, ``sample_rate`` takes ``round(rate * available)``
(neither: all). Amounts above what a source has repeat the whole source and draw the remainder. Draws
are deterministic in ``seed`` (and the file's name, not where it lies); with ``per_epoch_resample`` (Open-Assistant style) they are redrawn every
epoch, still reproducibly (seeded by seed and epoch).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

from oa_core.config import DatasetSpec
from oa_core.errors import OAError
from oa_data.loading import LoadedSource


@dataclass(frozen=True)
class SourceMix:
    """The realised amount of one source."""

    source: str
    format: str
    rule: str
    rows: int
    available: int
    taken: int
    dropped_invalid: int


@dataclass
class MixReport:
    """Per source: rows read, valid records available, records taken, rows dropped as invalid."""

    sources: list[SourceMix] = field(default_factory=list)
    seed: int = 0
    epoch: int = 0

    @property
    def total(self) -> int:
        return sum(s.taken for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "total": self.total, "sources": [asdict(s) for s in self.sources]}

    def lines(self) -> list[str]:
        """An aligned text table, one line per source plus a header and a total."""
        head = ("source", "format", "rule", "rows", "available", "taken", "dropped_invalid")
        body = [(s.source, s.format, s.rule, str(s.rows), str(s.available), str(s.taken), str(s.dropped_invalid))
                for s in self.sources]
        foot = ("total", "", "", str(sum(s.rows for s in self.sources)), str(sum(s.available for s in self.sources)),
                str(self.total), str(sum(s.dropped_invalid for s in self.sources)))
        table = [head, *body, foot]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        return ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                for row in table]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def amount(spec: DatasetSpec, available: int) -> tuple[int, str]:
    """How many records to take from a source with ``available`` valid ones, and the rule as text."""
    if spec.num_samples is not None:
        return spec.num_samples, f"num_samples={spec.num_samples}"
    if spec.sample_rate is not None:
        return round(spec.sample_rate * available), f"sample_rate={spec.sample_rate:g}"
    return available, "all"


def draw(n_available: int, n: int, rng: random.Random) -> list[int]:
    """``n`` indices into ``range(n_available)``: whole repeats, then a sorted sample without replacement."""
    repeats, rest = divmod(n, n_available) if n_available else (0, 0)
    return list(range(n_available)) * repeats + sorted(rng.sample(range(n_available), rest))


def mix(sources: list[tuple[DatasetSpec, LoadedSource]], seed: int, epoch: int = 0,
        per_epoch_resample: bool = False) -> tuple[list[Any], MixReport]:
    """Take each source's share and shuffle them together; returns the records and the realised mix."""
    draw_epoch = epoch if per_epoch_resample else 0
    report = MixReport(seed=seed, epoch=epoch)
    mixed: list[Any] = []
    for i, (spec, loaded) in enumerate(sources):
        available = len(loaded.records)
        n, rule = amount(spec, available)
        if n and not available:
            raise OAError(f"dataset '{spec.path}': {rule} but no valid records",
                          hint=f"{loaded.n_invalid} rows were invalid; run `oa data validate`" if loaded.n_invalid else "the source is empty")
        if n == available:
            picked = loaded.records
        else:
            # the file's name, not its folder: the same config draws the same records wherever the data lives
            rng = random.Random(f"{seed}:{draw_epoch}:{i}:{PurePath(spec.path).name}:{spec.format}")
            picked = [loaded.records[j] for j in draw(available, n, rng)]
        mixed += picked
        report.sources.append(SourceMix(loaded.source, spec.format, rule, loaded.n_rows, available, len(picked), loaded.n_invalid))
    random.Random(f"{seed}:{draw_epoch}:shuffle").shuffle(mixed)
    return mixed, report
