"""Per-dataset truncation of encoded samples, with a count of every dropped, truncated or chunked sample.

Rules (``DataSettings.truncation`` / ``DatasetSpec.truncation``; default ``keep_end`` for conversations,
``chunk`` for plain text). Conversations are only ever cut between whole messages:

- ``keep_end``: drop whole earliest turns (never a system message) until the sample fits and its first
  kept turn is not an answer (the turbo-alignment rule); drop the sample when even its last exchange
  does not fit. Plain text: the last ``max_length`` tokens;
- ``keep_start``: the longest run of whole first messages that fits and ends on an answer (turbo-alignment
  keeps whole messages). Plain text: the first ``max_length`` tokens;
- ``random_cut``: every conversation, long or not, ends after an answer chosen at random among those
  whose conversation up to them fits (turbo-alignment's ``random_cut``: "the end is chosen as a random bot
  message"). Conversations only;
- ``random_window``: a random window of ``max_length`` tokens holding supervised tokens (cuts inside
  messages);
- ``chunk``: plain text split into consecutive ``max_length`` pieces, as Axolotl's completion
  strategy does. Plain text only;
- ``drop``: drop samples longer than ``max_length`` (Axolotl's ``drop_long_seq``).

Every rule also drops samples (and chunks) shorter than ``min_length`` and samples left without
supervised tokens. :func:`fit` applies any rule; :func:`truncate` the rules that give one sample.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from itertools import accumulate

from oa_core.config import TRUNCATION_RULES, TruncationRule
from oa_core.errors import OAError
from oa_data.settings import truncation_problem
from oa_data.tokenize import IGNORE_INDEX, Encoded, Reencoder

Rule = TruncationRule
RULES = TRUNCATION_RULES


@dataclass
class TruncationReport:
    """What truncation did to one dataset."""

    kept: int = 0
    truncated: int = 0
    chunked: int = 0
    dropped_too_long: int = 0
    dropped_too_short: int = 0
    dropped_unsupervised: int = 0
    tokens_removed: int = 0
    chunks: int = 0
    chunks_too_short: int = 0
    chunk_tokens_dropped: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_too_long + self.dropped_too_short + self.dropped_unsupervised

    @property
    def seen(self) -> int:
        return self.kept + self.truncated + self.chunked + self.dropped

    def merge(self, other: TruncationReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self, name: str = "data") -> str:
        chunked = ""
        if self.chunked:
            chunked = f", {self.chunked} chunked into {self.chunks} pieces"
            if self.chunks_too_short:
                chunked += f" ({self.chunks_too_short} under min_length dropped, {self.chunk_tokens_dropped} tokens)"
        return (f"{name}: {self.seen} samples, {self.kept} kept as is, {self.truncated} truncated "
                f"({self.tokens_removed} tokens removed){chunked}, {self.dropped} dropped ({self.dropped_too_long} "
                f"too long, {self.dropped_too_short} too short, {self.dropped_unsupervised} without supervised tokens)")

    def outcome(self) -> str:
        """What happened to the one sample this report counted, in words."""
        if self.chunked:
            short = f", {self.chunks_too_short} under min_length dropped" if self.chunks_too_short else ""
            return f"chunked into {self.chunks} pieces{short}"
        if self.truncated:
            return f"truncated ({self.tokens_removed} tokens removed)"
        if self.kept:
            return "kept"
        reason = ("too long" if self.dropped_too_long else "too short" if self.dropped_too_short
                  else "no supervised tokens")
        return f"DROPPED ({reason})"


def is_text(encoded: Encoded) -> bool:
    """Whether ``encoded`` is plain text (one ``text`` turn) rather than a conversation."""
    return encoded.roles == ["text"]


def fit(encoded: Encoded, max_length: int, rule: Rule, min_length: int = 1, rng: random.Random | None = None,
        report: TruncationReport | None = None, reencode: Callable[[list[int]], Encoded] | None = None) -> list[Encoded]:
    """The samples ``encoded`` gives under ``rule``: one, none (dropped) or, for ``chunk``, several."""
    if rule == "chunk":
        return chunk(encoded, max_length, min_length, report)
    out = truncate(encoded, max_length, rule, min_length, rng, report, reencode)
    return [] if out is None else [out]


def chunk(encoded: Encoded, max_length: int, min_length: int = 1, report: TruncationReport | None = None) -> list[Encoded]:
    """Plain text cut into consecutive ``max_length`` pieces (bos in the first, eos in the last), as Axolotl's
    completion strategy does; a last piece shorter than ``min_length`` is dropped and counted."""
    _check_rule("chunk", encoded)
    report = report if report is not None else TruncationReport()
    n = len(encoded)
    if n <= max_length:
        out = truncate(encoded, max_length, "keep_start", min_length, report=report)
        return [] if out is None else [out]
    pieces = [_take(encoded, [(s, min(s + max_length, n))]) for s in range(0, n, max_length)]
    short = [p for p in pieces if len(p) < min_length]
    report.chunked += 1
    report.chunks += len(pieces) - len(short)
    report.chunks_too_short += len(short)
    report.chunk_tokens_dropped += sum(map(len, short))
    return [p for p in pieces if len(p) >= min_length]


def truncate(encoded: Encoded, max_length: int, rule: Rule, min_length: int = 1,
             rng: random.Random | None = None, report: TruncationReport | None = None,
             reencode: Callable[[list[int]], Encoded] | None = None) -> Encoded | None:
    """``encoded`` fitted into ``max_length`` tokens by ``rule``; ``None`` when the sample is dropped.

    Rules that cut a conversation between messages re-render the kept messages with ``reencode``
    (``oa_data.tokenize.reencoder``) when given, which is exact for templates that merge messages (llama-2
    puts the system prompt into the first user turn) or open the first turn with bos, and puts the loss of
    ``only_answer_loss`` on the last kept answer; otherwise they cut the dropped turns' tokens out.
    """
    if rule == "chunk":
        raise OAError("truncation 'chunk' gives several samples", hint="use oa_data.truncation.fit (or chunk)")
    _check_rule(rule, encoded)
    report = report if report is not None else TruncationReport()
    out = _apply(encoded, max_length, rule, rng or random.Random(0), reencode)
    return out if _count(report, encoded, out, min_length) else None


def _apply(enc: Encoded, max_length: int, rule: Rule, rng: random.Random, reencode) -> Encoded | None:
    n, text = len(enc), is_text(enc)
    if rule != "random_cut" and n <= max_length:
        return enc
    if rule in ("random_cut", "keep_start", "keep_end") and not text and not enc.turns:
        raise OAError(f"truncation '{rule}' cuts between messages but the sample has no turn spans",
                      hint="encode the record with its mask cross-check (encode_record)")
    if rule == "random_cut":
        return _cut_after_answer(enc, max_length, reencode, rng.choice)
    if rule == "drop":
        return None
    if rule == "keep_start":
        return _take(enc, [(0, max_length)]) if text else _cut_after_answer(enc, max_length, reencode, max)
    if rule == "keep_end":
        return _take(enc, [(n - max_length, n)]) if text else _drop_earliest_turns(enc, max_length, reencode)
    return _random_window(enc, max_length, rng)


def _count(report: TruncationReport, encoded: Encoded, out: Encoded | None, min_length: int) -> bool:
    """Count what happened to ``encoded``; whether ``out`` is kept."""
    if out is None:
        report.dropped_too_long += 1
        return False
    if len(out) < min_length:
        report.dropped_too_short += 1
        return False
    if out.num_supervised == 0:
        report.dropped_unsupervised += 1
        return False
    if out is encoded:
        report.kept += 1
    else:
        report.truncated += 1
        report.tokens_removed += len(encoded) - len(out)
    return True


def _check_rule(rule: str, enc: Encoded) -> None:
    if rule not in RULES:
        raise OAError(f"unknown truncation rule '{rule}'", hint=f"use one of {', '.join(RULES)}")
    problem = truncation_problem(rule, is_text(enc))
    if problem is not None:
        raise OAError(problem, hint="set another truncation for this dataset (datasets[i].truncation)")


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


def _answer_ends(enc: Encoded, reencode) -> list[int]:
    """Messages after which a cut leaves the sample ending on a trained-on answer."""
    if isinstance(reencode, Reencoder):
        return reencode.answers
    return [i for i, (s, e) in enumerate(enc.turns) if enc.roles[i] == "assistant"
            and any(label != IGNORE_INDEX for label in enc.labels[s:e])]


def _cut_after_answer(enc: Encoded, max_length: int, reencode, pick: Callable[[list[int]], int]) -> Encoded | None:
    """The messages up to and including the answer ``pick`` chooses among those whose prefix fits."""
    ends = _answer_ends(enc, reencode)
    if not ends:  # no answer to end on: nothing to cut
        return enc if len(enc) <= max_length else None
    fits = [k for k in ends if enc.turns[k][1] <= max_length]
    while fits:
        k = pick(fits)
        out = _prefix(enc, k, reencode)
        if len(out) <= max_length:
            return out
        fits = [j for j in fits if j < k]  # re-rendered longer than its turn spans said
    return None


def _prefix(enc: Encoded, last: int, reencode) -> Encoded:
    if last == len(enc.roles) - 1:
        return enc
    if reencode is not None:
        return reencode(list(range(last + 1)))
    return _take(enc, [(0, enc.turns[last][1])])


def _random_window(enc: Encoded, max_length: int, rng: random.Random) -> Encoded | None:
    sup = [0, *accumulate(label != IGNORE_INDEX for label in enc.labels)]
    starts = [s for s in range(len(enc) - max_length + 1) if sup[s + max_length] > sup[s]]
    if not starts:
        return None
    s = rng.choice(starts)
    return _take(enc, [(s, s + max_length)])
