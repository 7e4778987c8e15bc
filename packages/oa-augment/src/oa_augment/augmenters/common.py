"""Shared by the built-in augmenters: reading a record's prompt and answer, writing one with a part replaced."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from oa_core.schema import Conversation, validate_record


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


def same(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def clean(text: str) -> str:
    """A generated text without surrounding blanks or quotes the model wrapped it in."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def with_last_user(record: Any, content: str) -> Any:
    """``record`` with the content of the last user message of its prompt replaced."""
    data = record.model_dump(mode="json")
    key = "messages" if isinstance(record, Conversation) else "prompt"
    if key not in data:
        raise ValueError(f"a {type(record).__name__} record has no prompt")
    messages = data[key]
    if isinstance(record, Conversation):
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    else:
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
    messages[last] = messages[last] | {"content": content}
    return validate_record(data)


def with_response(record: Any, content: str) -> Any:
    """``record`` with its answer replaced (the last assistant message, the completion, the chosen reply, the
    reference)."""
    data = record.model_dump(mode="json")
    if isinstance(record, Conversation):
        last = max(i for i, m in enumerate(data["messages"]) if m["role"] == "assistant")
        data["messages"][last] = data["messages"][last] | {"content": content}
    elif "completion" in data:
        data["completion"] = [{"role": "assistant", "content": content}]
    elif "chosen" in data:
        data["chosen"] = [{"role": "assistant", "content": content}]
    elif "reference" in data:
        data["reference"] = content
    elif "text" in data:
        data["text"] = content
    else:
        raise ValueError(f"a {type(record).__name__} record has no answer")
    return validate_record(data)
