"""``answer``: an answer to each record's prompt (its conversation up to the last user turn), written as a
conversation (or a prompt/completion record). With a template, the last user message is rendered through it for
the generator only: the written record keeps the original prompt (e.g. a style instruction that is not data)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from oa_augment.augmenters.common import Options, clean
from oa_augment.records import prompt_messages, response_text
from oa_core.extensions import Augmenter

NAME = "answer"
VARIABLES = ("instruction", "messages", "reference")
# the last user message as it is; e.g. "Answer in one paragraph.\n\n{{ instruction }}" changes what is sent
TEMPLATE = "{{ instruction }}"


class AnswerOptions(Options):
    output: Literal["conversation", "prompt_completion"] = Field("conversation", description="record kind written")
    system: str | None = Field(None, description="a system message sent with every prompt (not written)")
    drop_truncated: bool = Field(True, description="make nothing from an answer cut off by max_new_tokens")


def augment(record, ctx):
    messages = prompt_messages(record, ctx.id)
    sent = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(sent) if m["role"] == "user")
    sent[last]["content"] = ctx.render(instruction=sent[last]["content"], messages=messages,
                                       reference=response_text(record))
    if ctx.options.system:
        sent = [{"role": "system", "content": ctx.options.system}, *[m for m in sent if m["role"] != "system"]]
    (completion,), = ctx.generate([sent])
    if completion.finish_reason == "length" and ctx.options.drop_truncated:
        ctx.drop("answer truncated (max_new_tokens)")
        return
    text = clean(completion.text)
    if not text:
        ctx.drop("empty answer")
        return
    if ctx.options.output == "prompt_completion":
        yield {"kind": "prompt_completion", "prompt": messages, "completion": text}
    else:
        yield {"kind": "conversation", "messages": [*messages, {"role": "assistant", "content": text}]}


AUGMENTER = Augmenter(augment, "an answer to each prompt (conversation or prompt/completion)", AnswerOptions, "1",
                      template=TEMPLATE, variables=VARIABLES)
