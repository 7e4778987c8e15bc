"""``self_instruct``: new tasks in the style of Self-Instruct / Alpaca. For each input record, the model sees
``demonstrations`` tasks drawn from the input (the record first, the rest with the record's random generator)
and writes a new one as ``Instruction:`` / ``Input:`` / ``Output:``, which is parsed into a conversation.
``dedup.against_input: true`` removes new tasks that copy a seed."""

from __future__ import annotations

import re

from pydantic import Field

from oa_augment.augmenters.common import Options, same
from oa_augment.records import instruction, response_text
from oa_core.extensions import Augmenter

NAME = "self_instruct"
VARIABLES = ("examples",)
TEMPLATE = """You are asked to come up with a new, diverse task for a language model, and to answer it.
Write it in exactly this form, with an empty Input when the task needs none:

Instruction: <the task>
Input: <the input of the task, or nothing>
Output: <a good answer>

Here are examples of tasks:
{% for e in examples %}
Instruction: {{ e.instruction }}
Output: {{ e.output }}
{% endfor %}
Now write one new task, different from the examples."""

PARTS = re.compile(r"Instruction:\s*(?P<instruction>.*?)\s*(?:Input:\s*(?P<input>.*?)\s*)?Output:\s*(?P<output>.*)",
                   re.S | re.I)


class SelfInstructOptions(Options):
    demonstrations: int = Field(3, ge=1, description="seed tasks shown in each prompt (the record and others)")
    min_instruction_words: int = Field(3, ge=1, description="new instructions with fewer words make nothing")


def parse(text: str) -> tuple[str, str, str] | None:
    """(instruction, input, output) of a generated task, None when it is not in the asked form."""
    m = PARTS.search(text)
    if not m:
        return None
    inst, inp, out = (" ".join((m.group(k) or "").split()) if k != "output" else (m.group(k) or "").strip()
                      for k in ("instruction", "input", "output"))
    inp = "" if inp.lower() in ("", "<noinput>", "none", "n/a", "<nothing>") else inp
    return (inst, inp, out) if inst and out else None


def augment(record, ctx):
    others = [r for k, r in enumerate(ctx.pool) if k != ctx.index]
    shown = [record, *ctx.rng.sample(others, min(len(others), ctx.options.demonstrations - 1))]
    examples = [{"instruction": instruction(r), "output": response_text(r) or ""} for r in shown]
    (completion,), = ctx.generate([ctx.render(examples=examples)])
    task = parse(completion.text) if completion.finish_reason == "stop" else None
    if task is None:
        ctx.drop("not a task in the asked form" if completion.finish_reason == "stop" else "task truncated")
        return
    inst, inp, out = task
    if len(inst.split()) < ctx.options.min_instruction_words:
        ctx.drop("instruction too short")
        return
    if any(same(inst, e["instruction"]) for e in examples):
        ctx.drop("copies a demonstration")
        return
    prompt = f"{inst}\n\n{inp}" if inp else inst
    yield {"kind": "conversation", "messages": [{"role": "user", "content": prompt},
                                                {"role": "assistant", "content": out}]}


AUGMENTER = Augmenter(augment, "new instruction/answer tasks from seed tasks (Self-Instruct / Alpaca)",
                      SelfInstructOptions, "1", template=TEMPLATE, variables=VARIABLES)
