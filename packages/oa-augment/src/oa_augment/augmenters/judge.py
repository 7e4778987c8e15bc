"""``judge``: LLM-as-judge filtering. The model rates each record's answer from 1 to 10; records rated at least
``min_score`` are written unchanged (with the rating in ``metadata.judge_score``), the others make nothing."""

from __future__ import annotations

import re

from pydantic import Field

from oa_augment.augmenters.common import Options
from oa_augment.records import instruction, response_text
from oa_core.extensions import Augmenter

NAME = "judge"
VARIABLES = ("instruction", "response")
TEMPLATE = """Rate how well the response answers the instruction: helpful, correct, complete and clear.
Reply with "Rating: N", N a whole number from 1 (useless) to 10 (excellent), and nothing else.

Instruction: {{ instruction }}

Response: {{ response }}"""
RATING = re.compile(r"rating\s*[:=]?\s*(\d+)", re.I)


class JudgeOptions(Options):
    min_score: int = Field(7, ge=1, le=10, description="lowest rating a record is kept with")


def augment(record, ctx):
    response = response_text(record)
    if not response:
        ctx.drop("no answer to judge")
        return
    (completion,), = ctx.generate([ctx.render(instruction=instruction(record, ctx.id), response=response)])
    m = RATING.search(completion.text) or re.fullmatch(r"\s*(\d+)\s*", completion.text)
    score = int(m.group(1)) if m else None
    if score is None or not 1 <= score <= 10:
        ctx.drop("judge gave no rating from 1 to 10")
    elif score < ctx.options.min_score:
        ctx.drop("judge rating below min_score")
    else:
        kept = record.model_copy(deep=True)
        kept.metadata["judge_score"] = score
        yield kept


AUGMENTER = Augmenter(augment, "the records an LLM judge rates at least min_score (LLM-as-judge filtering)",
                      JudgeOptions, "1", template=TEMPLATE, variables=VARIABLES)
