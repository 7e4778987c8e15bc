"""A model's chat template (the one saved with its tokenizer, or a registered one) and where its answers end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from oa_core.errors import OAError
from oa_core.extensions import ChatTemplate


def saved_template(tokenizer: Any) -> ChatTemplate | None:
    """The tokenizer's ``chat_template`` (oa saves the training template there), None when it has none."""
    text = getattr(tokenizer, "chat_template", None)
    if isinstance(text, dict):
        text = text.get("default")
    return ChatTemplate("tokenizer", text) if text else None


def chat_template(tokenizer: Any, name: str | None = None, *, where: str = "--model", registry: Any = None) -> ChatTemplate:
    """The registered template ``name``, else the tokenizer's own; its end of turn filled in when it has one.
    A one-line error when there is none (``where`` names the model in it)."""
    from oa_data.templates import TemplateError, with_end_of_turn

    if name:
        if registry is None:
            from oa_core.plugins import get_registry

            registry = get_registry()
        try:
            template = registry.get("chat_template", name)
        except OAError as e:
            raise OAError(f"--template: {e.message}", hint=e.hint or "see `oa plugins list --kind chat_template`") from None
    else:
        template = saved_template(tokenizer)
        if template is None:
            raise OAError(f"{where}: the tokenizer has no chat template",
                          hint="pass --template NAME, a registered template (oa plugins list --kind chat_template)")
    try:
        return with_end_of_turn(template, tokenizer)
    except TemplateError:
        return template  # no special token closes an answer: generation stops at eos only


def stop_token_ids(tokenizer: Any, template: ChatTemplate | None) -> list[int]:
    """Where an answer ends: [the template's end-of-turn token (when it is one token), the tokenizer's eos]."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if template is not None and template.end_of_turn:
        eot = tokenizer(template.end_of_turn, add_special_tokens=False)["input_ids"]
        if len(eot) == 1 and eot[0] not in ids:
            ids.insert(0, eot[0])
    return ids


def render_prompt(template: ChatTemplate, tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> str:
    """``messages`` rendered in oa's sandbox with the generation prompt (the assistant's turn opened)."""
    from oa_data.templates import render, template_variables

    return render(template, messages, add_generation_prompt=True, **template_variables(tokenizer))
