"""Labelled texts and conversations for sequence classification.

A row is ``input_ids`` (a text: bos + text + eos; a conversation: rendered with the chat template) and
``label``: a class index in ``[0, num_labels)``, or with ``multi_label`` a list of them. A sequence over
``max_length`` keeps its first tokens (counted). A row the format cannot read, an empty text, a label outside
``num_labels`` (or a name without the format's ``label_names``) and a conversation the template cannot
encode are dropped, counted per dataset with one line per record; a dataset that loses more than
``data.max_drop_fraction`` stops the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from oa_core.errors import RecordError
from oa_core.schema import Classification, Text
from oa_data.ranking import LabelledSplit, Problems, check_drops, load_mixed
from oa_data.tokenize import encode_messages, encode_text


@dataclass
class ClassificationReport:
    """What encoding and truncation did to one dataset of labelled records."""

    kept: int = 0
    truncated: int = 0  # sequences cut to max_length (the start kept)
    tokens_removed: int = 0
    problems: Problems = field(default_factory=Problems)

    @property
    def dropped(self) -> int:
        return self.problems.total

    def summary(self, name: str) -> str:
        bad = f" ({self.problems.text()})" if self.problems.total else ""
        return (f"{name}: {self.kept + self.dropped} records, {self.kept} kept ({self.truncated} truncated, "
                f"{self.tokens_removed} tokens removed), {self.dropped} dropped{bad}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["problems"] = {"counts": self.problems.counts, "first": self.problems.lines}
        return out


def class_indices(label: Any, num_labels: int, multi_label: bool) -> list[int] | str:
    """The class indices of a record's label, or why it has none that fit."""
    labels = label if isinstance(label, list) else [label]
    if isinstance(label, list) and not multi_label:
        return "a list of labels (set train.problem_type: multi_label)"
    for x in labels:
        if isinstance(x, str):
            return f"label '{x}' is a name (give the format's options.label_names)"
        if isinstance(x, bool) or not 0 <= x < num_labels:
            return f"label {x!r} is outside 0..{num_labels - 1} (train.num_labels {num_labels})"
    return sorted(set(labels))


def encode_input(record: Classification, tokenizer: Any, template: Any, where: str) -> list[int]:
    """The token ids of a record's text or conversation."""
    if record.text is not None:
        return encode_text(Text(text=record.text), tokenizer).input_ids
    if template is None:
        raise RecordError(f"{where}: a conversation needs a chat template", hint="set data.chat_template")
    settings = SimpleNamespace(train_on_inputs=True, only_answer_loss=False)
    return encode_messages(record.messages, tokenizer, template, settings, source=where, check=False).input_ids


def prepare_classification(cfg: Any, run_tokenizer: Any, split: str = "train", *, num_labels: int,
                           multi_label: bool = False, progress: bool | None = None) -> LabelledSplit | None:
    """Every classification record of a split as a row (module docstring), mixed and cut to ``data.max_length``
    (a dataset's own ``max_length`` wins); None for a split without datasets."""
    loaded = load_mixed(cfg, split, ClassificationReport, progress=progress)
    if loaded is None:
        return None
    records, origins, out, settings = loaded
    for record in records:
        spec, source, i = origins[id(record)]
        report, where = out.reports[source.source], source.where(i)
        if not isinstance(record, Classification):
            raise RecordError(f"{where}: a '{record.kind}' record has no class label",
                              hint="use the classification format for this method")
        labels = class_indices(record.label, num_labels, multi_label)
        if isinstance(labels, str):
            report.problems.add("with a label that does not fit", f"{where}: {labels}")
            continue
        content = record.text if record.text is not None else "".join(m.content for m in record.messages)
        if not content.strip():
            report.problems.add("empty", f"{where}: no text")
            continue
        try:
            ids = encode_input(record, run_tokenizer.tokenizer, run_tokenizer.template, where)
        except RecordError as e:
            report.problems.add("not encodable", str(e))
            continue
        limit = spec.max_length or settings.max_length
        if len(ids) > limit:
            report.truncated += 1
            report.tokens_removed += len(ids) - limit
            ids = ids[:limit]
        report.kept += 1
        out.rows.append({"input_ids": ids, "label": labels if multi_label else labels[0]})
    check_drops(split, out, settings.max_drop_fraction, "record")
    return out
