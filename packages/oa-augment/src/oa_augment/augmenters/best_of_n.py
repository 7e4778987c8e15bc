"""``best_of_n``: n answers to each prompt, scored by a reward function or a reward model (rejection sampling),
written as ranked replies (best first), a preference pair (best vs worst), or the best answer alone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from oa_augment.augmenters.common import Options, clean
from oa_augment.records import prompt_messages, response_text
from oa_core.extensions import Augmenter

NAME = "best_of_n"
VARIABLES = ("instruction", "messages")
TEMPLATE = "{{ instruction }}"


class BestOfNOptions(Options):
    n: int = Field(4, ge=2, description="answers sampled per prompt")
    output: Literal["ranked", "preference", "best"] = Field(
        "preference", description="ranked: oa.ranked_replies; preference: best vs worst (oa.preference); best: "
        "the best answer as a conversation")
    min_margin: float = Field(0.0, ge=0, description="preference: make nothing when best and worst score closer")
    include_reference: bool = Field(False, description="rank the record's own answer among the generated ones")


def augment(record, ctx):
    messages = prompt_messages(record, ctx.id)
    sent = [dict(m) for m in messages]
    sent[-1]["content"] = ctx.render(instruction=sent[-1]["content"], messages=messages)
    (completions,) = ctx.generate([sent], n=ctx.options.n)
    answers = list(dict.fromkeys(clean(c.text) for c in completions if c.finish_reason == "stop" and c.text.strip()))
    reference = response_text(record) if ctx.options.include_reference else None
    if reference and reference not in answers:
        answers.append(reference)
    if len(answers) < 2:
        ctx.drop("fewer than 2 distinct finished answers")
        return
    scores = ctx.score(messages, answers)
    ranked = sorted((s, -k, a) for k, (a, s) in enumerate(zip(answers, scores, strict=True)) if s is not None)
    ranked = [(s, a) for s, _, a in reversed(ranked)]  # best first; equal scores keep sampling order
    if len(ranked) < 2:
        ctx.drop("fewer than 2 answers scored")
        return
    meta = {"scores": [s for s, _ in ranked]}
    if ctx.options.output == "ranked":
        yield {"kind": "ranked_replies", "prompt": messages, "replies": [a for _, a in ranked], "metadata": meta}
    elif ctx.options.output == "best":
        yield {"kind": "conversation", "messages": [*messages, {"role": "assistant", "content": ranked[0][1]}],
               "metadata": meta}
    elif ranked[0][0] - ranked[-1][0] <= ctx.options.min_margin:
        ctx.drop("best and worst answers score alike")
    else:
        yield {"kind": "preference", "prompt": messages, "chosen": [{"role": "assistant", "content": ranked[0][1]}],
               "rejected": [{"role": "assistant", "content": ranked[-1][1]}], "metadata": meta}


AUGMENTER = Augmenter(augment, "n answers ranked by a reward: ranked replies, a preference pair or the best",
                      BestOfNOptions, "1", template=TEMPLATE, variables=VARIABLES, needs_reward=True)
