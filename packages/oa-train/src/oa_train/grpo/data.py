"""Prompts for on-policy training: every record of the datasets that has a prompt, as token ids plus what reward
functions may read.

A record's prompt is what oa-infer generates from (:func:`oa_infer.prompts.generation_prompt`): a conversation's
messages up to its last user turn, the prompt of a prompt record (``prompt_reference``, ``prompt_completion``,
preference and feedback records), or a plain text, continued as is. Conversations are rendered with the run's chat
template and its generation prompt (:class:`oa_infer.prompts.PromptEncoder`, as the generators do).

The columns reward functions may ask for: ``reference`` (a ``prompt_reference`` record's reference, a prompt
record's completion, a conversation's answer after the last user turn), ``messages`` (the prompt's messages; None
for a text prompt), ``metadata`` (the record's metadata dict), or any key of the record's metadata.

Records without a prompt, prompts longer than ``max_prompt_length`` and records without a column a reward
function needs are dropped and counted per dataset (``file:LINE: why`` for the first ones); a dataset that loses
more than ``data.max_drop_fraction`` stops the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from oa_core.errors import OAError, RecordError
from oa_data.ranking import Problems, check_drops, load_mixed

STANDARD_COLUMNS = ("reference", "messages", "metadata")


@dataclass
class PromptReport:
    """What happened to the records of one dataset."""

    kept: int = 0
    problems: Problems = field(default_factory=Problems)

    @property
    def dropped(self) -> int:
        return self.problems.total

    def summary(self, name: str) -> str:
        bad = f" ({self.problems.text()})" if self.problems.total else ""
        return f"{name}: {self.kept + self.dropped} records, {self.kept} prompts kept, {self.dropped} dropped{bad}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["problems"] = {"counts": self.problems.counts, "first": self.problems.lines}
        return out


def prompt_text(prompt: Any) -> str:
    """The prompt as reward functions get it: a text as is, a conversation's last user message (else its last
    message)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]


def column_value(record: Any, prompt: Any, column: str) -> tuple[bool, Any]:
    """``(present, value)`` of a reward column for a record."""
    from oa_infer.prompts import reference

    if column == "reference":
        value = reference(record)
        return value is not None, value
    if column == "messages":
        return True, None if isinstance(prompt, str) else prompt
    if column == "metadata":
        return True, dict(record.metadata)
    return column in record.metadata, record.metadata.get(column)


def prepare_prompts(cfg: Any, run_tokenizer: Any, split: str = "train", *, columns: dict[str, tuple[str, ...]],
                    max_prompt_length: int | None, progress: bool | None = None):
    """The prompts of a split as rows ``{prompt, prompt_ids, text, where, columns}``, in a
    :class:`oa_data.ranking.LabelledSplit` with a :class:`PromptReport` per dataset; None for a split without
    datasets. ``columns``: reward name -> the columns it needs."""
    from oa_core.generation import generation_prompt
    from oa_infer.prompts import PromptEncoder

    loaded = load_mixed(cfg, split, PromptReport, progress=progress)
    if loaded is None:
        return None
    records, origins, out, settings = loaded
    encoder = PromptEncoder(run_tokenizer.tokenizer, "the run's tokenizer")
    needed = sorted({c for cols in columns.values() for c in cols})
    for record in records:
        _, source, i = origins[id(record)]
        report, where = out.reports[source.source], source.where(i)
        try:
            prompt = generation_prompt(record, where)
        except RecordError as e:
            report.problems.add("without a prompt", str(e))
            continue
        values, missing = {}, None
        for column in needed:
            present, values[column] = column_value(record, prompt, column)
            if not present:
                missing = column
                break
        if missing is not None:
            users = [name for name, cols in columns.items() if missing in cols]
            report.problems.add(f"without {missing}", f"{where}: no '{missing}' (reward '{users[0]}' needs it)")
            continue
        try:
            ids = encoder.encode(prompt)
        except RecordError as e:
            report.problems.add("not encodable", str(e))
            continue
        except OAError:
            raise
        if not ids:
            report.problems.add("empty", f"{where}: the prompt has no tokens")
            continue
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            report.problems.add("too long", f"{where}: the prompt has {len(ids)} tokens, more than max_prompt_length "
                                f"{max_prompt_length}")
            continue
        report.kept += 1
        out.rows.append({"prompt": prompt, "prompt_ids": ids, "text": prompt_text(prompt), "where": where,
                         "columns": values})
    check_drops(split, out, settings.max_drop_fraction, "prompt")
    return out
