"""Per-dataset truncation of encoded samples, with a count of every dropped or truncated sample.

Rules (``DataSettings.truncation`` / ``DatasetSpec.truncation``):

- ``keep_start``: keep the first ``max_length`` tokens;
- ``keep_end``: drop whole earliest turns (never a system message) until the sample fits and its first
  kept turn is not an answer (the turbo-alignment rule); drop the sample when even its last exchange
  does not fit;
- ``drop``: drop samples longer than ``max_length`` (Axolotl's ``drop_long_seq``);
- ``random_cut``: keep a random window of ``max_length`` tokens that holds supervised tokens (for
  evaluation sets).

Every rule also drops samples shorter than ``min_length`` and samples left without supervised tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

from oa_core.errors import OAError
from oa_data.tokenize import IGNORE_INDEX, Encoded

Rule = Literal["keep_start", "keep_end", "drop", "random_cut"]
RULES = ("keep_start", "keep_end", "drop", "random_cut")


@dataclass
class TruncationReport:
    """What truncation did to one dataset."""

    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_too_short: int = 0
    dropped_unsupervised: int = 0
    tokens_removed: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_too_long + self.dropped_too_short + self.dropped_unsupervised

    @property
    def seen(self) -> int:
        return self.kept + self.truncated + self.dropped

    def summary(self, name: str = "data") -> str:
        return (f"{name}: {self.seen} samples, {self.kept} kept as is, {self.truncated} truncated "
                f"({self.tokens_removed} tokens removed), {self.dropped} dropped ({self.dropped_too_long} too long, "
                f"{self.dropped_too_short} too short, {self.dropped_unsupervised} without supervised tokens)")


def truncate(encoded: Encoded, max_length: int, rule: Rule, min_length: int = 1,
             rng: random.Random | None = None, report: TruncationReport | None = None,
             reencode: Callable[[list[int]], Encoded] | None = None) -> Encoded | None:
    """``encoded`` fitted into ``max_length`` tokens by ``rule``; ``None`` when the sample is dropped.

    ``keep_end`` re-renders the kept messages with ``reencode`` (``oa_data.tokenize.reencoder``) when
    given, which is exact for templates that merge messages (llama-2 puts the system prompt into the
    first user turn) or open the first turn with bos; otherwise it cuts the dropped turns' tokens out.
    """
    if rule not in RULES:
        raise OAError(f"unknown truncation rule '{rule}'", hint=f"use one of {', '.join(RULES)}")
    report = report if report is not None else TruncationReport()
    n = len(encoded)
    if n <= max_length:
        out = encoded
    elif rule == "drop":
        out = None
    elif rule == "keep_start":
        out = _take(encoded, [(0, max_length)])
    elif rule == "keep_end":
        out = _drop_earliest_turns(encoded, max_length, reencode)
    else:
        out = _random_window(encoded, max_length, rng or random.Random(0))
    if out is None:
        report.dropped_too_long += 1
    elif len(out) < min_length:
        report.dropped_too_short += 1
        out = None
    elif out.num_supervised == 0:
        report.dropped_unsupervised += 1
        out = None
    elif out is encoded:
        report.kept += 1
    else:
        report.truncated += 1
        report.tokens_removed += n - len(out)
    return out


def _take(enc: Encoded, ranges: list[tuple[int, int]]) -> Encoded:
    """The tokens of ``ranges`` (sorted, disjoint); turns are clipped and shifted, emptied ones removed."""
    ids, labels, turns, roles = [], [], [], []
    shift = []  # (start, end, new start) of each kept range
    for s, e in ranges:
        shift.append((s, e, len(ids)))
        ids += enc.input_ids[s:e]
        labels += enc.labels[s:e]
    for (ts, te), role in zip(enc.turns, enc.roles, strict=True):
        kept = [(max(ts, s) - s + o, min(te, e) - s + o) for s, e, o in shift if max(ts, s) < min(te, e)]
        if kept:
            turns.append((kept[0][0], kept[-1][1]))
            roles.append(role)
    return Encoded(ids, labels, turns, roles)


def _drop_earliest_turns(enc: Encoded, max_length: int, reencode) -> Encoded | None:
    droppable = [i for i, r in enumerate(enc.roles) if r != "system"]
    sizes = [enc.turns[i][1] - enc.turns[i][0] for i in droppable]
    for k, removed in enumerate(accumulate(sizes), start=1):
        if k >= len(droppable):
            return None
        if len(enc) - removed > max_length or enc.roles[droppable[k]] in ("assistant", "tool"):
            continue
        gone = set(droppable[:k])
        if reencode is not None:
            out = reencode([i for i in range(len(enc.roles)) if i not in gone])
            if len(out) <= max_length:
                return out
            continue
        keep, pos = [], 0
        for s, e in sorted(enc.turns[i] for i in gone):
            keep.append((pos, s))
            pos = e
        keep.append((pos, len(enc)))
        return _take(enc, [(s, e) for s, e in keep if e > s])
    return None


def _random_window(enc: Encoded, max_length: int, rng: random.Random) -> Encoded | None:
    sup = [0, *accumulate(label != IGNORE_INDEX for label in enc.labels)]
    starts = [s for s in range(len(enc) - max_length + 1) if sup[s + max_length] > sup[s]]
    if not starts:
        return None
    s = rng.choice(starts)
    return _take(enc, [(s, s + max_length)])
