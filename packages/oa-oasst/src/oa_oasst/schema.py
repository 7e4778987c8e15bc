"""Pydantic models of the Open-Assistant export format (message trees and messages)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OasstRole = Literal["prompter", "assistant"]


class _Export(BaseModel):
    # Unknown export fields (added by later exports) are ignored, not errors.
    model_config = ConfigDict(extra="ignore")


class LabelValue(_Export):
    """The average of one label over its ``count`` votes (``value`` in 0..1, None when unset)."""

    value: float | None = None
    count: int = Field(0, ge=0)


class OasstMessage(_Export):
    """One message of an export; ``replies`` nests its children (None in the flat export)."""

    message_id: str = Field(min_length=1)
    parent_id: str | None = None
    user_id: str | None = None
    created_date: str | None = None
    text: str
    role: OasstRole
    lang: str | None = None
    review_count: int | None = None
    review_result: bool | None = None
    deleted: bool | None = None
    rank: int | None = None
    synthetic: bool | None = None
    model_name: str | None = None
    emojis: dict[str, int] | None = None
    replies: list[OasstMessage] | None = None
    labels: dict[str, LabelValue] | None = None
    events: dict[str, Any] | None = None
    detoxify: dict[str, Any] | None = None
    # set in the flat message export only
    message_tree_id: str | None = None
    tree_state: str | None = None

    def walk(self) -> Iterator[OasstMessage]:
        """This message and every message below it, depth-first in file order (iterative: any depth)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.replies or []))

    def size(self) -> int:
        """Messages in this subtree."""
        return sum(1 for _ in self.walk())

    def label(self, name: str) -> float | None:
        """The value of label ``name``, None when absent."""
        found = (self.labels or {}).get(name)
        return found.value if found else None


class OasstTree(_Export):
    """One message tree: its id, state (e.g. ``ready_for_export``) and root prompt."""

    message_tree_id: str = Field(min_length=1)
    tree_state: str | None = None
    prompt: OasstMessage
    origin: str | None = None


def count_messages(node: Any) -> int:
    """Messages in a raw (unvalidated) nested message dict; 0 for anything else."""
    count, stack = 0, [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += 1
            replies = node.get("replies")
            stack.extend(replies if isinstance(replies, list) else ())
    return count
