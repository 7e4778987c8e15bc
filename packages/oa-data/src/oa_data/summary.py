"""What happened to every dataset of a split, in numbers a user checks before training: rows read, rows the
format could not read, records given, records in the mix, kept / truncated / chunked / dropped (by reason), the
samples training gets and their supervised tokens. Printed at the start of every run, written to its manifest,
and the basis of ``data.max_drop_fraction``: a dataset that loses more than that stops the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from oa_core.errors import OAError


@dataclass
class DatasetSummary:
    key: str  # the config key of the dataset entry, e.g. datasets.0
    source: str
    format: str
    rows: int = 0  # read from the source
    invalid: int = 0  # rows the format could not read
    records: int = 0  # records the format gave (e.g. OASST threads)
    taken: int = 0  # records in the mix (sample_rate / num_samples)
    kept: int = 0  # as they were
    truncated: int = 0
    chunked: int = 0  # plain texts split into pieces
    dropped_too_long: int = 0
    dropped_too_short: int = 0
    dropped_unsupervised: int = 0
    samples: int = 0  # what training gets (chunks counted one by one)
    tokens: int = 0
    supervised: int = 0  # supervised tokens

    @property
    def dropped(self) -> int:
        return self.dropped_too_long + self.dropped_too_short + self.dropped_unsupervised

    @property
    def lost(self) -> int:
        """Records lost to reading or to length rules (not to sampling, which the config asks for)."""
        return self.invalid + self.dropped

    @property
    def lost_fraction(self) -> float:
        return self.lost / max(self.invalid + self.taken, 1)

    def reasons(self) -> str:
        parts = [(self.invalid, "unreadable"), (self.dropped_too_long, "too long"), (self.dropped_too_short, "too short"),
                 (self.dropped_unsupervised, "no supervised tokens")]
        return ", ".join(f"{n} {why}" for n, why in parts if n) or "none"

    def to_dict(self) -> dict:
        return asdict(self)


def table(split: str, summaries: list[DatasetSummary]) -> list[str]:
    """The summary of one split as aligned lines (what `oa train` prints before training)."""
    head = ("dataset", "records", "in mix", "kept", "truncated", "chunked", "dropped", "samples", "supervised tokens")
    rows = [(s.source, str(s.records), str(s.taken), str(s.kept), str(s.truncated), str(s.chunked),
             f"{s.lost} ({s.lost_fraction:.0%})", str(s.samples), f"{s.supervised:,}") for s in summaries]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def fmt(row) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    lines = [f"data [{split}]:", "  " + fmt(head), *("  " + fmt(r) for r in rows)]
    lines += [f"  {s.source}: dropped {s.reasons()}" for s in summaries if s.lost]
    return lines


def check_losses(summaries: list[DatasetSummary], max_fraction: float) -> None:
    """Stop when a dataset lost more than ``max_fraction`` of its records, naming it and the knobs."""
    for s in summaries:
        if s.lost and s.lost_fraction > max_fraction:
            raise OAError(
                f"{s.key}: {s.lost} of {s.invalid + s.taken} records of {s.source} were lost ({s.reasons()}), "
                f"{s.lost_fraction:.0%} > data.max_drop_fraction {max_fraction:g}",
                hint=f"raise data.max_length (or {s.key}.max_length), pick another truncation ({s.key}.truncation), "
                "fix the unreadable rows, or allow it with data.max_drop_fraction",
            )
