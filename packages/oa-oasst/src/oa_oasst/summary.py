"""Counts of what happened to every input line and message of an OASST export."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

MAX_WARNINGS = 20


@dataclass
class Summary:
    """Every input message ends in exactly one bucket: used, unused, invalid or dropped[reason]."""

    source: str = ""
    lines: int = 0
    trees: int = 0
    bad_trees: int = 0
    messages: int = 0
    used: int = 0
    unused: int = 0
    invalid: int = 0
    records: int = 0
    dropped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    warn: bool = True

    def skip(self, problem: str, messages: int) -> None:
        """Record a bad tree (or line) that is skipped, with the messages it held."""
        self.bad_trees += 1
        self.messages += messages
        self.invalid += messages
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(problem)
            if self.warn:
                from tqdm import tqdm

                tqdm.write(f"warning: skipped {problem}", file=sys.stderr)

    @property
    def accounted(self) -> int:
        return self.used + self.unused + self.invalid + sum(self.dropped.values())

    def as_dict(self) -> dict:
        return {
            "source": self.source, "lines": self.lines, "trees": self.trees, "bad_trees": self.bad_trees,
            "messages": self.messages, "used": self.used, "unused": self.unused, "invalid": self.invalid,
            "dropped": dict(sorted(self.dropped.items())), "records": self.records,
        }

    def text(self) -> str:
        """A few human-readable lines."""
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        out = [
            f"{self.source}: {self.lines} lines, {self.trees} trees read, "
            f"{self.bad_trees} bad trees/lines skipped",
            f"messages: {self.messages} in = {self.used} used + {self.unused} unused (no record needs them)"
            f" + {self.invalid} in bad trees + {sum(self.dropped.values())} dropped ({drops})",
            f"records: {self.records}",
        ]
        if self.bad_trees > len(self.warnings):
            out.append(f"({self.bad_trees - len(self.warnings)} more problems not shown)")
        return "\n".join(out)
