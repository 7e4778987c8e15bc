"""``paraphrase``: the record with its prompt (or its answer) said in other words by the model; the rest of the
record is kept as it is."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from oa_augment.augmenters.common import Options, clean, same, with_last_user, with_response
from oa_augment.records import instruction, response_text
from oa_core.extensions import Augmenter

NAME = "paraphrase"
VARIABLES = ("text", "part")
TEMPLATE = ("Rewrite the following {{ part }} in other words, keeping its meaning and every detail. Reply with the "
            "rewritten text only.\n\n{{ text }}")


class ParaphraseOptions(Options):
    part: Literal["prompt", "response"] = Field("prompt", description="what is rewritten: the last user message, "
                                                "or the answer")
    n: int = Field(1, ge=1, description="paraphrases per record (each a record)")


def augment(record, ctx):
    part = ctx.options.part
    text = instruction(record, ctx.id) if part == "prompt" else response_text(record)
    if not text:
        ctx.drop(f"no {part} to rewrite")
        return
    (completions,) = ctx.generate([ctx.render(text=text, part=part)], n=ctx.options.n)
    seen = [text]
    for completion in completions:
        new = clean(completion.text)
        if completion.finish_reason == "length":
            ctx.drop("paraphrase truncated (max_new_tokens)")
        elif not new or any(same(new, s) for s in seen):
            ctx.drop("paraphrase empty or unchanged")
        else:
            seen.append(new)
            yield with_last_user(record, new) if part == "prompt" else with_response(record, new)


AUGMENTER = Augmenter(augment, "the prompt (or the answer) said in other words", ParaphraseOptions, "1",
                      template=TEMPLATE, variables=VARIABLES)
