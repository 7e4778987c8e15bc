"""Core record types: every dataset format is converted into one of these.

Each record has a ``kind`` discriminator, so a mixed stream validates through :data:`AnyRecord`.
Prompts given as plain strings become one user message; completions given as strings become one
assistant message.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from oa_core.errors import RecordError

Role = Literal["system", "user", "assistant", "tool"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    """One chat message. ``train`` overrides the loss-mask policy for this message (None = policy)."""

    role: Role
    content: str
    train: bool | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


Messages = Annotated[list[Message], Field(min_length=1)]


def _as_messages(value: Any, role: str) -> Any:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return value


class _Record(_Strict):
    metadata: dict[str, Any] = Field(default_factory=dict)


class _PromptRecord(_Record):
    prompt: Messages

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        return _as_messages(v, "user")


class Conversation(_Record):
    """A chat: system/user/assistant/tool messages (SFT)."""

    kind: Literal["conversation"] = "conversation"
    messages: Messages


class Text(_Record):
    """Plain text for (continued) pretraining: every token is trained on."""

    kind: Literal["text"] = "text"
    text: str = Field(min_length=1)


class PromptCompletion(_PromptRecord):
    """A prompt and the completion to learn."""

    kind: Literal["prompt_completion"] = "prompt_completion"
    completion: Messages

    @field_validator("completion", mode="before")
    @classmethod
    def _completion(cls, v: Any) -> Any:
        return _as_messages(v, "assistant")


class PreferencePair(_PromptRecord):
    """A prompt with a preferred and a dispreferred continuation (DPO family, reward models)."""

    kind: Literal["preference"] = "preference"
    chosen: Messages
    rejected: Messages

    @field_validator("chosen", "rejected", mode="before")
    @classmethod
    def _continuation(cls, v: Any) -> Any:
        return _as_messages(v, "assistant")


class UnpairedFeedback(_PromptRecord):
    """One completion with a thumbs up/down label (KTO)."""

    kind: Literal["unpaired_feedback"] = "unpaired_feedback"
    completion: Messages
    label: bool

    @field_validator("completion", mode="before")
    @classmethod
    def _completion(cls, v: Any) -> Any:
        return _as_messages(v, "assistant")


class RankedReplies(_PromptRecord):
    """A prompt with K >= 2 replies ordered best-first (Open-Assistant reward-model data)."""

    kind: Literal["ranked_replies"] = "ranked_replies"
    replies: Annotated[list[str], Field(min_length=2)]


class Classification(_Record):
    """A text or a conversation with a label, or a list of labels (multi-label sequence classification)."""

    kind: Literal["classification"] = "classification"
    text: str | None = None
    messages: list[Message] | None = None
    label: int | str | list[int | str]

    @model_validator(mode="after")
    def _one_input(self) -> Classification:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of 'text' and 'messages'")
        return self


class PromptWithReference(_PromptRecord):
    """A prompt and a reference answer that rewards are computed against (RL, e.g. GRPO)."""

    kind: Literal["prompt_reference"] = "prompt_reference"
    reference: str


RECORD_TYPES: dict[str, type[_Record]] = {
    cls.model_fields["kind"].default: cls
    for cls in (
        Conversation,
        Text,
        PromptCompletion,
        PreferencePair,
        UnpairedFeedback,
        RankedReplies,
        Classification,
        PromptWithReference,
    )
}

AnyRecord = Annotated[
    Conversation | Text | PromptCompletion | PreferencePair | UnpairedFeedback | RankedReplies | Classification | PromptWithReference,
    Field(discriminator="kind"),
]
_any_record = TypeAdapter(AnyRecord)


def describe_validation_error(err: ValidationError, record_type: type[BaseModel] | None = None) -> str:
    """The most useful problem of a pydantic error as ``field 'a.b': message``; unknown fields first,
    with a "did you mean" from the record type's fields."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = list(first["loc"])
    if record_type is None and loc and loc[0] in RECORD_TYPES:  # the discriminated union's tag
        record_type = RECORD_TYPES[loc.pop(0)]
    field = ".".join(str(p) for p in loc) or "<record>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden" and record_type is not None and len(loc) == 1:
        close = difflib.get_close_matches(str(loc[0]), list(record_type.model_fields), n=1)
        msg = "unknown field" + (f" (did you mean '{close[0]}'?)" if close else "")
    extra = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field '{field}': {msg.removeprefix('Value error, ')}{extra}"


def validate_record(data: Any, record_type: type[_Record] | None = None, *, source: str = "<data>", index: int | None = None):
    """Validate ``data`` into a record; errors name the source, record index and field.

    Without ``record_type`` the ``kind`` key selects the type.
    """
    try:
        if record_type is None:
            return _any_record.validate_python(data)
        return record_type.model_validate(data)
    except ValidationError as e:
        where = source if index is None else f"{source}: record {index}"
        raise RecordError(f"{where}: {describe_validation_error(e, record_type)}") from None
