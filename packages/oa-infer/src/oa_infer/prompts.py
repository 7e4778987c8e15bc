"""Prompts for inference: what of a record is generated from or scored, and how a prompt becomes tokens.

A prompt is raw text or a conversation (``{"role", "content"}`` dicts). Conversations are rendered with the
tokenizer's saved chat template (the one training used) in oa's jinja sandbox, with the generation prompt;
raw text is encoded as training encodes plain text: ``bos`` (when distinct from eos) + the text.
"""

from __future__ import annotations

from typing import Any

from oa_core.errors import OAError
from oa_core.generation import Prompt, message_dicts
from oa_core.schema import (
    Classification,
    Conversation,
    PreferencePair,
    PromptCompletion,
    PromptWithReference,
    RankedReplies,
    Text,
    UnpairedFeedback,
)


def reference(record: Any) -> str | None:
    """The answer a record gives for its prompt, if any (for comparing generations with it)."""
    if isinstance(record, PromptWithReference):
        return record.reference
    if isinstance(record, PromptCompletion):
        return "".join(m.content for m in record.completion)
    if isinstance(record, Conversation):
        last_user = max((i for i, m in enumerate(record.messages) if m.role == "user"), default=-1)
        answer = next((m for m in record.messages[last_user + 1:] if m.role == "assistant"), None)
        return answer.content if answer else None
    return None


def scoring_inputs(record: Any) -> list[tuple[str, Prompt]]:
    """``(name, sequence)`` to score for a record: the whole conversation or text (``input``), a prompt with each
    of its continuations (``chosen``/``rejected``, ``reply_0``..., ``completion``)."""
    if isinstance(record, Text):
        return [("input", record.text)]
    if isinstance(record, Conversation):
        return [("input", message_dicts(record.messages))]
    if isinstance(record, Classification):
        return [("input", record.text if record.text is not None else message_dicts(record.messages or []))]
    prompt = message_dicts(record.prompt)
    if isinstance(record, PreferencePair):
        return [("chosen", prompt + message_dicts(record.chosen)), ("rejected", prompt + message_dicts(record.rejected))]
    if isinstance(record, RankedReplies):
        return [(f"reply_{i}", prompt + [{"role": "assistant", "content": r}]) for i, r in enumerate(record.replies)]
    if isinstance(record, PromptCompletion | UnpairedFeedback):
        return [("completion", prompt + message_dicts(record.completion))]
    return [("input", prompt)]  # PromptWithReference: the prompt alone


class PromptEncoder:
    """Turns prompts into token ids with ``tokenizer`` and its saved chat template."""

    def __init__(self, tokenizer: Any, source: str = "the tokenizer"):
        from oa_data.templates import template_variables

        self.tokenizer = tokenizer
        self.source = source
        self.variables = template_variables(tokenizer)
        self._template = None

    @property
    def template(self):
        if self._template is None:
            from oa_infer.prompting import saved_template

            self._template = saved_template(self.tokenizer)
            if self._template is None:
                raise OAError(f"{self.source} has no chat template to render conversation prompts with",
                              hint="use a model trained with oa (it saves its template), give --tokenizer a folder "
                              "with one, or use plain-text prompts")
        return self._template

    def text(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        """The prompt as the model sees it (a conversation rendered with the template)."""
        if isinstance(prompt, str):
            return prompt
        from oa_data.templates import render

        return render(self.template, prompt, add_generation_prompt, **self.variables)

    def encode(self, prompt: Prompt, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a prompt: a rendered conversation as is (the template writes its own ``bos``), raw text
        after ``bos`` (when the tokenizer has one distinct from eos)."""
        ids = list(self.tokenizer(self.text(prompt, add_generation_prompt), add_special_tokens=False)["input_ids"])
        if isinstance(prompt, str):
            bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
            if bos is not None and bos != eos:
                ids.insert(0, bos)
        return ids
