"""Helpers shared by the built-in formats: field access with clear errors, message clean-up, options."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class FieldError(ValueError):
    """A problem with one field of a raw row; the loader adds file and record index."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"field '{field}': {message}")


class FormatOptions(BaseModel):
    """Base of format options: unknown option names are errors."""

    model_config = ConfigDict(extra="forbid")


def get(row: dict, field: str, *, required: bool = True, default: Any = None) -> Any:
    """``row[field]``; a missing or null required field raises :class:`FieldError`."""
    value = row.get(field)
    if value is None:
        if required:
            raise FieldError(field, "missing or null")
        return default
    return value


def text(row: dict, field: str, *, required: bool = True, default: str = "") -> str:
    """``row[field]`` as a string (numbers, as CSV readers infer them, become their text)."""
    value = get(row, field, required=required, default=default)
    if isinstance(value, int | float) and not isinstance(value, bool):  # e.g. a CSV column of numbers
        return str(value)
    if not isinstance(value, str):
        raise FieldError(field, f"expected a string, got {type(value).__name__}")
    return value


def messages(value: Any, field: str, role_map: dict[str, str] | None = None, role_key: str = "role",
             content_key: str = "content") -> Any:
    """Normalize a list of message dicts: rename role/content keys, map role names, ``weight`` 0/1 to
    ``train``, drop null keys (columnar readers fill keys missing in one message with null). Strings pass
    through unchanged."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise FieldError(field, f"expected a list of messages, got {type(value).__name__}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise FieldError(f"{field}.{i}", f"expected a message object, got {type(msg).__name__}")
        msg = {k: v for k, v in msg.items() if v is not None}
        if role_key not in msg:
            raise FieldError(f"{field}.{i}.{role_key}", "missing or null")
        role = msg.pop(role_key)
        if role_map is not None:
            if role not in role_map:
                raise FieldError(f"{field}.{i}.{role_key}", f"unknown role '{role}' (known: {', '.join(role_map)})")
            role = role_map[role]
        content = msg.pop(content_key, None)
        if content is None:
            raise FieldError(f"{field}.{i}.{content_key}", "missing or null")
        if "weight" in msg:  # OpenAI/ShareGPT style: weight 0 = do not train on this message
            weight = msg.pop("weight")
            if weight not in (0, 1):
                raise FieldError(f"{field}.{i}.weight", f"must be 0 or 1, got {weight!r}")
            msg["train"] = bool(weight)
        out.append({"role": role, "content": content, **msg})
    return out
