"""Preference-style formats: pairs, hh-rlhf dialogues, KTO unpaired feedback, ranked replies."""

from __future__ import annotations

import re

from pydantic import Field

from oa_data.formats.common import FieldError, FormatOptions, get, messages, text


def parse_preference(row: dict) -> dict:
    """An optional ``margin`` column (how much better chosen is) goes to ``metadata.margin``."""
    out = {
        "prompt": messages(get(row, "prompt"), "prompt"),
        "chosen": messages(get(row, "chosen"), "chosen"),
        "rejected": messages(get(row, "rejected"), "rejected"),
    }
    margin = get(row, "margin", required=False)
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            raise FieldError("margin", f"expected a number, got {type(margin).__name__}")
        out["metadata"] = {"margin": float(margin)}
    return out


class HHRLHFOptions(FormatOptions):
    user_tag: str = Field("Human", description="speaker tag of user turns")
    assistant_tag: str = Field("Assistant", description="speaker tag of assistant turns")


def split_dialogue(dialogue: str, field: str, user_tag: str = "Human", assistant_tag: str = "Assistant") -> list[dict]:
    """Split ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` into user/assistant messages."""
    tags = f"{re.escape(user_tag)}|{re.escape(assistant_tag)}"
    parts = re.split(rf"(?:^|\n\n)({tags}):", dialogue)
    if parts[0].strip():
        raise FieldError(field, f"text before the first '{user_tag}:' turn")
    if len(parts) < 3:
        raise FieldError(field, f"no '{user_tag}:' or '{assistant_tag}:' turns")
    roles = {user_tag: "user", assistant_tag: "assistant"}
    return [{"role": roles[tag], "content": body.strip()} for tag, body in zip(parts[1::2], parts[2::2], strict=True)]


def parse_hh_rlhf(row: dict, options: HHRLHFOptions) -> dict:
    """The shared message prefix of the two dialogues is the prompt; the divergent tails are the answers."""
    tags = (options.user_tag, options.assistant_tag)
    chosen = split_dialogue(text(row, "chosen"), "chosen", *tags)
    rejected = split_dialogue(text(row, "rejected"), "rejected", *tags)
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise FieldError("rejected", "shares no first turn with 'chosen'")
    if n == len(chosen) or n == len(rejected):
        raise FieldError("rejected", "no divergent reply: one dialogue equals or extends the other")
    return {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}


def parse_kto(row: dict) -> dict:
    return {
        "prompt": messages(get(row, "prompt"), "prompt"),
        "completion": messages(get(row, "completion"), "completion"),
        "label": get(row, "label"),
    }


def parse_ranked(row: dict) -> dict:
    """``replies`` best first, or in any order with ``scores`` (higher is better; kept best-first in
    ``metadata.scores``, so equal scores stay visible as ties)."""
    replies = get(row, "replies")
    scores = get(row, "scores", required=False)
    out = {"prompt": messages(get(row, "prompt"), "prompt"), "replies": replies}
    if scores is not None:
        if not isinstance(replies, list) or not isinstance(scores, list) or len(scores) != len(replies):
            raise FieldError("scores", "must be a list as long as 'replies'")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in scores):
            raise FieldError("scores", "must be numbers")
        order = sorted(range(len(replies)), key=lambda i: -scores[i])
        out |= {"replies": [replies[i] for i in order], "metadata": {"scores": [float(scores[i]) for i in order]}}
    return out
