"""Prompts with candidate replies, for reward models and preference optimisation: a preference pair (chosen,
rejected), replies ranked best first, one reply with a thumbs up/down.

A record becomes one row: ``prompt_input_ids`` (the rendered prompt, ending with the generation prompt; never
supervised), ``candidate_input_ids`` and ``candidate_labels`` (each reply's tokens — its content and the end of
the turn — and their labels, -100 where the template does not supervise), in the record's order (chosen then
rejected; ranked best first), and the record's ``margin`` (pairs, from ``metadata.margin``) and ``label``
(unpaired feedback). A reply's full sequence is ``prompt_input_ids + candidate_input_ids[k]``.

Truncation keeps the end of the prompt and the start of every reply (the reward is read at a reply's end, and
preference losses need the tokens right after the prompt): the prompt loses tokens from the left until the
longest reply fits ``max_length``, keeping at least ``min(prompt, max_length // 2)`` tokens; replies still too
long lose tokens from the right. Pairs whose replies are identical, empty replies and groups with fewer than two
different replies are dropped; every cut and drop is counted per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from oa_core.errors import OAError, RecordError
from oa_core.schema import Message, PreferencePair, RankedReplies, UnpairedFeedback
from oa_data.tokenize import IGNORE_INDEX, encode_messages

COLUMNS = ("prompt_input_ids", "candidate_input_ids", "candidate_labels", "margin", "label")
RECORDS = (PreferencePair, RankedReplies, UnpairedFeedback)


@dataclass
class CandidateReport:
    """What encoding and truncation did to one dataset of candidate groups."""

    kept: int = 0
    prompt_cut: int = 0  # groups whose prompt lost tokens from the left
    reply_cut: int = 0  # groups with a reply that lost tokens from the right
    dropped_identical: int = 0  # a pair (or all replies) with the same text
    dropped_empty: int = 0  # a reply with no tokens
    tokens_removed: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_identical + self.dropped_empty

    def summary(self, name: str) -> str:
        return (f"{name}: {self.kept + self.dropped} groups, {self.kept} kept ({self.prompt_cut} with the prompt cut, "
                f"{self.reply_cut} with a reply cut, {self.tokens_removed} tokens removed), {self.dropped} dropped "
                f"({self.dropped_identical} with identical replies, {self.dropped_empty} with an empty reply)")


def candidate_replies(record: Any) -> list[list[Message]]:
    """The replies of a record in its order (chosen first; best first), as message lists."""
    if isinstance(record, PreferencePair):
        return [list(record.chosen), list(record.rejected)]
    if isinstance(record, RankedReplies):
        return [[Message(role="assistant", content=text)] for text in record.replies]
    if isinstance(record, UnpairedFeedback):
        return [list(record.completion)]
    raise RecordError(f"a '{getattr(record, 'kind', type(record).__name__)}' record has no candidate replies",
                      hint="use preference, ranked or kto records")


def encode_candidates(record: Any, tokenizer: Any, template: Any, *, source: str | None = None) -> dict:
    """One row (see the module docstring) from a preference, ranked or unpaired-feedback record."""
    replies = candidate_replies(record)
    settings = SimpleNamespace(train_on_inputs=False, only_answer_loss=False)
    prompt = [m.model_copy(update={"train": False}) for m in record.prompt]
    prompt_ids, ids, labels = None, [], []
    for reply in replies:
        answer = [m if m.train is not None else m.model_copy(update={"train": True}) for m in reply]
        enc = encode_messages(prompt + answer, tokenizer, template, settings, source=source, check=False)
        cut = next((k for k, label in enumerate(enc.labels) if label != IGNORE_INDEX), len(enc.labels))
        if prompt_ids is None:
            prompt_ids = enc.input_ids[:cut]
        elif prompt_ids != enc.input_ids[:cut]:
            raise RecordError(f"{source or '<data>'}: the prompt tokenizes differently before two of its replies",
                              hint="the chat template renders the prompt depending on the answer")
        ids.append(enc.input_ids[cut:])
        labels.append(enc.labels[cut:])
    margin = record.metadata.get("margin") if isinstance(record, PreferencePair) else None
    label = record.label if isinstance(record, UnpairedFeedback) else None
    return {"prompt_input_ids": prompt_ids, "candidate_input_ids": ids, "candidate_labels": labels,
            "margin": None if margin is None else float(margin), "label": label}


def fit_candidates(row: dict, max_length: int, report: CandidateReport | None = None, *,
                   min_prompt: int | None = None) -> dict | None:
    """``row`` cut to ``max_length`` tokens per sequence (module docstring), or None when it is dropped.
    ``min_prompt``: the prompt keeps at least this many tokens (default ``max_length // 2``)."""
    report = report if report is not None else CandidateReport()
    replies = row["candidate_input_ids"]
    if any(len(r) == 0 for r in replies):
        report.dropped_empty += 1
        return None
    if len(replies) > 1 and len({tuple(r) for r in replies}) < len(replies):
        report.dropped_identical += 1
        return None
    prompt, longest = row["prompt_input_ids"], max(len(r) for r in replies)
    if len(prompt) + longest <= max_length:
        report.kept += 1
        return row
    keep_prompt = max(min(len(prompt), max_length // 2 if min_prompt is None else min_prompt), max_length - longest)
    reply_budget = max_length - keep_prompt
    out = dict(row, prompt_input_ids=prompt[len(prompt) - keep_prompt:],
               candidate_input_ids=[r[:reply_budget] for r in replies],
               candidate_labels=[lab[:reply_budget] for lab in row["candidate_labels"]])
    report.kept += 1
    report.prompt_cut += keep_prompt < len(prompt)
    report.reply_cut += longest > reply_budget
    report.tokens_removed += (len(prompt) - keep_prompt) + sum(max(len(r) - reply_budget, 0) for r in replies)
    return out


@dataclass
class CandidateSplit:
    """The rows of one split and what happened to each dataset."""

    rows: list[dict]
    reports: dict[str, CandidateReport] = field(default_factory=dict)
    records: int = 0

    def lines(self, split: str) -> list[str]:
        return [f"[{split}] {len(self.rows)} of {self.records} groups", *(f"  {r.summary(n)}" for n, r in self.reports.items())]


def prepare_candidates(cfg: Any, run_tokenizer: Any, split: str = "train", *, progress: bool | None = None
                       ) -> CandidateSplit | None:
    """Every record of a split (``datasets`` or ``eval_datasets``) as a candidate row, mixed, encoded and cut to
    ``data.max_length`` (a dataset's own ``max_length`` wins); None for a split without datasets."""
    from oa_data.mixing import mix
    from oa_data.pipeline import load_sources
    from oa_data.settings import DataSettings

    settings = cfg.section("data", DataSettings)
    specs = list(cfg.datasets if split == "train" else cfg.eval_datasets)
    if not specs:
        return None
    if run_tokenizer.template is None:
        raise OAError(f"{split} data: candidate replies need a chat template", hint="set data.chat_template")
    sources = load_sources(specs, settings, progress=progress)
    records, _ = mix(sources, cfg.seed)
    origins = {id(r): (spec, loaded, i) for spec, loaded in sources for i, r in enumerate(loaded.records)}
    out = CandidateSplit([], {loaded.source: CandidateReport() for _, loaded in sources}, len(records))
    for record in records:
        spec, loaded, i = origins[id(record)]
        if not isinstance(record, RECORDS):
            raise RecordError(f"{loaded.where(i)}: a '{record.kind}' record has no candidate replies",
                              hint="use a preference, ranked or kto format for this method")
        row = encode_candidates(record, run_tokenizer.tokenizer, run_tokenizer.template, source=loaded.where(i))
        fitted = fit_candidates(row, spec.max_length or settings.max_length, out.reports[loaded.source])
        if fitted is not None:
            out.rows.append(fitted)
    if not out.rows:
        raise OAError(f"{split} data: every group was dropped", hint="; ".join(r.summary(n) for n, r in out.reports.items()))
    for i, (name, report) in enumerate(out.reports.items()):
        total = report.kept + report.dropped
        if report.dropped and report.dropped / total > settings.max_drop_fraction:
            key = f"{'datasets' if split == 'train' else 'eval_datasets'}.{i}"
            raise OAError(f"{key}: {report.dropped} of {total} groups of {name} were dropped ({report.dropped_identical} "
                          f"with identical replies, {report.dropped_empty} with an empty reply), more than "
                          f"data.max_drop_fraction {settings.max_drop_fraction:g}",
                          hint="clean the data, or allow it with data.max_drop_fraction")
    return out
