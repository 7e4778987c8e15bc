"""Chat formats: alpaca, ShareGPT, OpenAI messages, turbo-alignment chat."""

from __future__ import annotations

from pydantic import Field

from oa_data.formats.common import FormatOptions, get, messages, text

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bing": "assistant", "chatgpt": "assistant", "tool": "tool", "observation": "tool"}
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
TURBO_ROLES = {"system": "system", "user": "user", "bot": "assistant", "assistant": "assistant", "tool": "tool"}


def parse_alpaca(row: dict) -> dict:
    instruction = text(row, "instruction").strip()
    extra = text(row, "input", required=False).strip()
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    out = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text(row, "output")}]
    system = text(row, "system", required=False)
    return {"messages": ([{"role": "system", "content": system}] if system else []) + out}


class ShareGPTOptions(FormatOptions):
    role_map: dict[str, str] = Field(default_factory=lambda: dict(SHAREGPT_ROLES), description="'from' value -> role")
    role_key: str = "from"
    content_key: str = "value"


def parse_sharegpt(row: dict, options: ShareGPTOptions) -> dict:
    msgs = messages(get(row, "conversations"), "conversations", options.role_map, options.role_key, options.content_key)
    system = text(row, "system", required=False)
    return {"messages": ([{"role": "system", "content": system}] if system else []) + msgs}


class OpenAIOptions(FormatOptions):
    role_map: dict[str, str] = Field(default_factory=lambda: dict(OPENAI_ROLES), description="role name -> role")


def parse_openai(row: dict, options: OpenAIOptions) -> dict:
    return {"messages": messages(get(row, "messages"), "messages", options.role_map)}


class TurboChatOptions(FormatOptions):
    role_tag_mapping: dict[str, str] = Field(default_factory=lambda: dict(TURBO_ROLES), description="turbo role -> role")


def parse_turbo_chat(row: dict, options: TurboChatOptions) -> dict:
    msgs = messages(get(row, "messages"), "messages", options.role_tag_mapping)
    for msg in msgs:
        if "disable_loss" in msg:
            msg["train"] = not msg.pop("disable_loss")
    metadata = {k: row[k] for k in ("id", "label", "meta") if row.get(k) is not None}
    return {"messages": msgs, "metadata": metadata}
