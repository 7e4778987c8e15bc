"""``revision``: "fix this text" pairs, as Open-Assistant's essay revision: a text (the record's answer, or its
text) is corrupted by rules (words dropped, swapped and misspelt, drawn from the record's own random generator)
and the record written asks to fix the corrupted text, with the original as the answer. Needs no generator."""

from __future__ import annotations

from pydantic import Field

from oa_augment.augmenters.common import Options
from oa_augment.records import response_text
from oa_core.extensions import Augmenter

NAME = "revision"
VARIABLES = ("text",)
TEMPLATE = "Fix the spelling, grammar and word order of the following text:\n\n{{ text }}"


class RevisionOptions(Options):
    rate: float = Field(0.15, gt=0, le=1, description="share of words corrupted")
    min_words: int = Field(8, ge=2, description="texts with fewer words make nothing")


def corrupt(words: list[str], rate: float, rng) -> list[str]:
    """``words`` with about ``rate`` of them dropped, swapped with the next one, or with two letters swapped."""
    out = list(words)
    for _ in range(max(1, round(len(words) * rate))):
        i = rng.randrange(len(out))
        action = rng.choice(("drop", "swap", "typo")) if len(out) > 2 else "typo"
        if action == "drop":
            del out[i]
        elif action == "swap" and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif len(out[i]) > 3:
            j = rng.randrange(len(out[i]) - 1)
            w = out[i]
            out[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return out


def augment(record, ctx):
    text = response_text(record)
    words = (text or "").split()
    if len(words) < ctx.options.min_words:
        ctx.drop("text too short to corrupt")
        return
    broken = " ".join(corrupt(words, ctx.options.rate, ctx.rng))
    if broken == " ".join(words):
        ctx.drop("corruption changed nothing")
        return
    yield {"kind": "prompt_completion", "prompt": [{"role": "user", "content": ctx.render(text=broken)}],
           "completion": [{"role": "assistant", "content": text}]}


AUGMENTER = Augmenter(augment, '"fix this text" pairs: a corrupted text -> the original (no generator)',
                      RevisionOptions, "1", template=TEMPLATE, variables=VARIABLES, needs_generator=False)
