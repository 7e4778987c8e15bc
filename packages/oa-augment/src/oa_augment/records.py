"""What augmenters and filters read of a core record (its prompt, its answer, all its text) and how records are
written: native ``oa.*`` rows (``kind`` + fields), which ``oa train`` reads with the ``oa.<kind>`` formats."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from oa_core.errors import RecordError
from oa_core.generation import generation_prompt
from oa_core.schema import (
    Classification,
    Conversation,
    PreferencePair,
    PromptCompletion,
    PromptWithReference,
    RankedReplies,
    Text,
    UnpairedFeedback,
    validate_record,
)


def prompt_messages(record: Any, where: str = "record") -> list[dict[str, Any]]:
    """What a record asks (:func:`oa_core.generation.generation_prompt`), a text as one user message."""
    prompt = generation_prompt(record, where)
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def instruction(record: Any, where: str = "record") -> str:
    """The text of the last user message of the record's prompt."""
    return next(m["content"] for m in reversed(prompt_messages(record, where)) if m["role"] == "user")


def response_text(record: Any) -> str | None:
    """The answer a record teaches: the completion, the reply after the last user turn, the chosen or best reply,
    the reference, or a text."""
    if isinstance(record, Text):
        return record.text
    if isinstance(record, PromptCompletion | UnpairedFeedback):
        return "".join(m.content for m in record.completion)
    if isinstance(record, PreferencePair):
        return "".join(m.content for m in record.chosen)
    if isinstance(record, RankedReplies):
        return record.replies[0]
    if isinstance(record, PromptWithReference):
        return record.reference
    if isinstance(record, Conversation):
        last = max((i for i, m in enumerate(record.messages) if m.role == "user"), default=-1)
        replies = [m.content for m in record.messages[last + 1 :] if m.role == "assistant"]
        return "\n".join(replies) if replies else None
    if isinstance(record, Classification):
        return record.text
    return None


def texts(record: Any) -> list[str]:
    """Every text of a record, in order."""
    out: list[str] = []
    map_texts(record, lambda t: out.append(t) or t)
    return out


def map_texts(record: Any, fn: Callable[[str], str]) -> Any:
    """A copy of ``record`` with ``fn`` applied to each of its texts (message contents, text, replies, reference)."""
    data = record.model_dump(mode="json")

    def msgs(items):
        return [m | {"content": fn(m["content"])} for m in items]

    for key in ("messages", "prompt", "completion", "chosen", "rejected"):
        if data.get(key) is not None:
            data[key] = msgs(data[key])
    for key in ("text", "reference"):
        if isinstance(data.get(key), str):
            data[key] = fn(data[key])
    if "replies" in data:
        data["replies"] = [fn(r) for r in data["replies"]]
    return validate_record(data)


def key_text(record: dict[str, Any] | Any, on: str) -> str:
    """The text a filter or dedup looks at: ``prompt`` (its prompt's text), ``response`` or ``all``."""
    record = as_record(record)
    if on == "prompt":
        try:
            return "\n".join(m["content"] for m in prompt_messages(record))
        except RecordError:
            return "\n".join(texts(record))
    if on == "response":
        return response_text(record) or ""
    return "\n".join(texts(record))


def as_record(value: Any, where: str = "record") -> Any:
    """A core record from a record or a native dict (with ``kind``)."""
    if isinstance(value, dict):
        return validate_record(value, source=where)
    return value


def to_row(record: Any) -> dict[str, Any]:
    """The native row of a record: ``kind`` and its fields (unset optional fields left out)."""
    return record.model_dump(mode="json", exclude_none=True)


def fingerprint(value: Any) -> str:
    """A short hash of a JSON value (records, settings)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
