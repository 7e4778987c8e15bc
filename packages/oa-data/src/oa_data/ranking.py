"""Ranked reply groups for reward models: preference pairs (chosen, rejected) and rankings (best first), as
candidate rows (:mod:`oa_data.candidates`) with the rank of every reply.

A row is ``prompt_input_ids``, ``candidate_input_ids`` (best first), ``ranks`` (0 = best; tied replies share a
rank, so the pairs between them are not trained) and ``margin`` (a pair's ``metadata.margin``, or None).
Ranks come from ``metadata.ranks`` (lower is better, as OASST exports them), ``metadata.scores`` (higher is
better, as the ``ranked`` format keeps them) or the order of the replies. A group keeps its best
``max_replies`` replies. Sequences are cut to ``max_length`` as :func:`oa_data.candidates.fit_candidates`
does: the prompt from the left (keeping at least ``min_prompt`` tokens), then the replies from the right.

Bad input never stops a run and is never dropped silently: rows the format cannot read, a reply with no text,
all replies tied, a missing score or margin, a record the template cannot encode are counted per dataset with
one line per record (``file:LINE: why``); a dataset that loses more than ``data.max_drop_fraction`` stops
the run with those numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from oa_core.errors import OAError, RecordError
from oa_core.schema import PreferencePair, RankedReplies
from oa_data.candidates import CandidateReport, candidate_replies, encode_candidates, fit_candidates

RECORDS = (PreferencePair, RankedReplies)
SHOWN = 10  # lines kept per dataset (all are counted)


@dataclass
class Problems:
    """Records dropped for bad input: a count per reason and the first lines naming them."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def add(self, reason: str, line: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.note(line)

    def note(self, line: str) -> None:
        """A line about a record counted elsewhere."""
        if len(self.lines) < SHOWN:
            self.lines.append(line)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def text(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in self.counts.items())


@dataclass
class RankingReport(CandidateReport):
    """:class:`~oa_data.candidates.CandidateReport` plus what ranking data adds."""

    replies_cut: int = 0  # groups with more than max_replies replies (the best ones kept)
    tied: int = 0  # groups with tied replies (kept; their tied pairs are not trained)
    pairs: int = 0  # ordered (untied) reply pairs of the kept groups
    problems: Problems = field(default_factory=Problems)

    @property
    def dropped(self) -> int:
        return self.dropped_identical + self.dropped_empty + self.problems.total

    def summary(self, name: str) -> str:
        bad = f"; {self.problems.text()}" if self.problems.total else ""
        return (f"{name}: {self.kept + self.dropped} groups, {self.kept} kept with {self.pairs} pairs ({self.prompt_cut} "
                f"with the prompt cut, {self.reply_cut} with a reply cut, {self.tokens_removed} tokens removed, "
                f"{self.replies_cut} over max_replies, {self.tied} with ties), {self.dropped} dropped "
                f"({self.dropped_identical} with identical replies, {self.dropped_empty} with an empty reply{bad})")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["problems"] = {"counts": self.problems.counts, "first": self.problems.lines}
        return out


@dataclass
class LabelledSplit:
    """The rows of one split and a report per dataset (``reports[name].summary(name)``)."""

    rows: list[dict]
    reports: dict[str, Any] = field(default_factory=dict)
    records: int = 0

    def lines(self, split: str) -> list[str]:
        out = [f"[{split}] {len(self.rows)} of {self.records} records"]
        for name, report in self.reports.items():
            out.append(f"  {report.summary(name)}")
            out += [f"    {line}" for line in report.problems.lines]
        return out


def load_mixed(cfg: Any, split: str, report_type: type, *, progress: bool | None = None):
    """The mixed records of a split with the place of each, and a report per dataset in which the rows its
    format could not read are already counted; None for a split without datasets."""
    from oa_data.mixing import mix
    from oa_data.pipeline import load_sources
    from oa_data.settings import DataSettings

    settings = cfg.section("data", DataSettings)
    specs = list(cfg.datasets if split == "train" else cfg.eval_datasets)
    if not specs:
        return None
    sources = load_sources(specs, settings, strict=False, progress=progress)
    records, _ = mix(sources, cfg.seed)
    reports = {loaded.source: report_type() for _, loaded in sources}
    for _, loaded in sources:
        for error in loaded.errors:
            reports[loaded.source].problems.add("unreadable", error)
    origins = {id(r): (spec, loaded, i) for spec, loaded in sources for i, r in enumerate(loaded.records)}
    return records, origins, LabelledSplit([], reports, len(records) + sum(len(x.errors) for _, x in sources)), settings


def check_drops(split: str, out: LabelledSplit, max_drop_fraction: float, what: str) -> None:
    """Stop when every record was dropped, or when a dataset lost more than ``max_drop_fraction``."""
    if not out.rows:
        raise OAError(f"{split} data: every {what} was dropped",
                      hint="; ".join(r.summary(n) for n, r in out.reports.items()))
    for i, (name, report) in enumerate(out.reports.items()):
        total = report.kept + report.dropped
        if report.dropped and report.dropped / total > max_drop_fraction:
            key = f"{'datasets' if split == 'train' else 'eval_datasets'}.{i}"
            first = f" First: {report.problems.lines[0]}" if report.problems.lines else ""
            raise OAError(f"{key}: {report.dropped} of {total} {what}s of {name} were dropped, more than "
                          f"data.max_drop_fraction {max_drop_fraction:g} ({report.summary(name)}).{first}",
                          hint="clean the data, or allow it with data.max_drop_fraction")


def reply_ranks(record: Any) -> list[int] | None:
    """Dense ranks of a record's replies (0 = best, ties equal) from ``metadata.ranks`` (lower is better) or
    ``metadata.scores`` (higher is better); None when the record has neither (its order is the ranking)."""
    meta = record.metadata
    if meta.get("ranks") is not None:
        keys = [float(r) for r in meta["ranks"]]
    elif meta.get("scores") is not None:
        keys = [-float(s) for s in meta["scores"]]
    else:
        return None
    levels = sorted(set(keys))
    return [levels.index(k) for k in keys]


def prepare_ranking(cfg: Any, run_tokenizer: Any, split: str = "train", *, max_replies: int = 5,
                    min_prompt: int | None = None, use_margin: bool = False,
                    progress: bool | None = None) -> LabelledSplit | None:
    """Every preference pair and ranking of a split (``datasets`` or ``eval_datasets``) as a ranked row (module
    docstring), mixed and cut to ``data.max_length`` (a dataset's own ``max_length`` wins); None for a split
    without datasets. ``use_margin``: a preference pair needs ``metadata.margin`` (rankings have none)."""
    loaded = load_mixed(cfg, split, RankingReport, progress=progress)
    if loaded is None:
        return None
    records, origins, out, settings = loaded
    if run_tokenizer.template is None:
        raise OAError(f"{split} data: ranked replies need a chat template", hint="set data.chat_template")
    scored = {id(source) for _, source, _ in origins.values()
              if any(reply_ranks(r) is not None for r in source.records)}
    for record in records:
        spec, source, i = origins[id(record)]
        report, where = out.reports[source.source], source.where(i)
        if not isinstance(record, RECORDS):
            raise RecordError(f"{where}: a '{record.kind}' record is no pair or ranking",
                              hint="use a preference, hh_rlhf, ranked or oasst.ranked format for this method")
        row = _ranked_row(record, run_tokenizer, where, report, max_replies=max_replies, use_margin=use_margin,
                          scored=id(source) in scored)
        if row is None:
            continue
        before = report.dropped_identical
        fitted = fit_candidates(row, spec.max_length or settings.max_length, report, min_prompt=min_prompt)
        if fitted is None:
            why = "identical replies" if report.dropped_identical > before else "a reply with no tokens"
            report.problems.note(f"{where}: {why}")
            continue
        del fitted["candidate_labels"]
        ranks = fitted["ranks"]
        report.pairs += sum(a < b for a in ranks for b in ranks)
        out.rows.append(fitted)
    check_drops(split, out, settings.max_drop_fraction, "group")
    return out


def _ranked_row(record: Any, run_tokenizer: Any, where: str, report: RankingReport, *, max_replies: int,
                use_margin: bool, scored: bool) -> dict | None:
    """The encoded row of one record with its ranks, or None (counted in ``report``)."""
    replies = candidate_replies(record)
    if any(not "".join(m.content for m in reply).strip() for reply in replies):
        report.dropped_empty += 1
        report.problems.note(f"{where}: a reply has no text")
        return None
    ranks = reply_ranks(record)
    if ranks is None and scored:
        report.problems.add("without scores", f"{where}: no scores or ranks, while other records of this dataset "
                            "have them")
        return None
    ranks = ranks if ranks is not None else list(range(len(replies)))
    if len(replies) > max_replies:
        report.replies_cut += 1
        record = record.model_copy(update={"replies": record.replies[:max_replies]})
        ranks = ranks[:max_replies]
    if len(set(ranks)) == 1:
        report.problems.add("with all replies tied", f"{where}: all replies are tied (equal scores or ranks)")
        return None
    margin = record.metadata.get("margin") if isinstance(record, PreferencePair) else None
    if use_margin and margin is None and isinstance(record, PreferencePair):
        report.problems.add("without a margin", f"{where}: no margin (train.use_margin is on)")
        return None
    try:
        row = encode_candidates(record, run_tokenizer.tokenizer, run_tokenizer.template, source=where)
    except RecordError as e:
        report.problems.add("not encodable", str(e))
        return None
    if len(set(ranks)) < len(ranks):
        report.tied += 1
        report.problems.note(f"{where}: tied replies (ranks {ranks}); the pairs between them are not trained")
    return row | {"ranks": ranks, "margin": margin}
