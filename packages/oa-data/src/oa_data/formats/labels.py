"""Labelled formats: sequence classification and prompts with a reference answer."""

from __future__ import annotations

from pydantic import Field

from oa_data.formats.common import FieldError, FormatOptions, get, messages, text


class ClassificationOptions(FormatOptions):
    label_names: list[str] | None = Field(None, description="map string labels to their index in this list")


def parse_classification(row: dict, options: ClassificationOptions) -> dict:
    """``label``: an index or a name (one of ``label_names``), or a list of them (multi-label)."""
    label = get(row, "label")
    if options.label_names is not None:
        label = [_index(x, options.label_names) for x in label] if isinstance(label, list) else _index(
            label, options.label_names)
    if row.get("messages") is not None:
        return {"messages": messages(row["messages"], "messages"), "label": label}
    return {"text": text(row, "text"), "label": label}


def _index(label, names: list[str]):
    if not isinstance(label, str):
        return label
    if label not in names:
        raise FieldError("label", f"'{label}' is not one of label_names {names}")
    return names.index(label)


class PromptReferenceOptions(FormatOptions):
    reference_after: str | None = Field(None, description="keep only the text after the last marker, e.g. '####'")


def parse_prompt_reference(row: dict, options: PromptReferenceOptions) -> dict:
    reference = text(row, "reference")
    if options.reference_after is not None:
        if options.reference_after not in reference:
            raise FieldError("reference", f"has no '{options.reference_after}' marker")
        reference = reference.rsplit(options.reference_after, 1)[1].strip()
    return {"prompt": messages(get(row, "prompt"), "prompt"), "reference": reference}
