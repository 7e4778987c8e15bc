"""Plain-text formats: pretraining text and the GPT-Neo style QA JSON."""

from __future__ import annotations

from pydantic import Field

from oa_data.formats.common import FormatOptions, text


def parse_pretraining(row: dict) -> dict:
    return {"text": text(row, "text")}


class QAJsonOptions(FormatOptions):
    """``split``: which top-level list of the file to read (default: the dataset's ``split``)."""

    split: str | None = Field(None, description="top-level key of the file to read, e.g. train or test")
    prompt_template: str = Field("Question: {question}\nAnswer:", description="with {question}")

    def json_field(self) -> str | None:
        """The top-level key whose list holds the rows (read by the loader)."""
        return self.split


def parse_qa_json(row: dict, options: QAJsonOptions) -> dict:
    question = text(row, "Question").strip()
    answer = text(row, "Answer").strip()
    return {"prompt": options.prompt_template.format(question=question), "completion": answer}
