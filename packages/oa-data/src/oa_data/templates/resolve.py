"""Choose the chat template of a run: inline/file jinja > turbo prefix/suffix > named > tokenizer's own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oa_core.errors import OAError
from oa_core.extensions import ChatTemplate
from oa_data.templates.base import TemplateError, render, turbo_template

_PROBE = ("\ue010", "\ue011", "\ue012")  # private-use characters: never part of a template's own text


def template_variables(tokenizer: Any) -> dict[str, str]:
    """The special-token strings templates may use (``bos_token`` ...; '' when the tokenizer has none)."""
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    return {n: str(getattr(tokenizer, n, None) or "") for n in names}


def special_token_strings(tokenizer: Any) -> list[str]:
    """Every special token the tokenizer knows (named and added-special), longest first."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            found.add(str(tok))
    return sorted(found, key=len, reverse=True)


def infer_end_of_turn(template: ChatTemplate, tokenizer: Any, extra_tokens: Iterable[str] = ()) -> str:
    """The end-of-turn string of ``template``: the first special token (of the tokenizer, the template's
    ``special_tokens`` or ``extra_tokens``, e.g. tokens still to be added) rendered after an answer."""
    variables = template_variables(tokenizer)
    probe = [{"role": "user", "content": _PROBE[0]}, {"role": "assistant", "content": _PROBE[1]},
             {"role": "user", "content": _PROBE[2]}]
    text = render(template, probe, **variables)
    start, stop = text.find(_PROBE[1]), text.find(_PROBE[2])
    if start < 0:
        raise TemplateError(f"chat template '{template.name}' never renders an assistant message",
                            hint="the template must output message['content'] of assistant messages")
    between = text[start + 1 : stop if stop > start else len(text)]
    candidates = {*special_token_strings(tokenizer), *template.special_tokens, *extra_tokens}
    hits = [(between.find(t), t) for t in candidates if t and t in between]
    if not hits:
        raise TemplateError(
            f"chat template '{template.name}': no special token follows an assistant answer ({between!r})",
            hint="set data.end_of_turn, or add the template's end-of-turn token with data.add_special_tokens",
        )
    return min(hits, key=lambda h: (h[0], -len(h[1])))[1]


def _jinja_source(value: str) -> tuple[str, str]:
    """(name, text) of ``chat_template_jinja``: a path to an existing file, or inline jinja text."""
    if "{" not in value and "\n" not in value:
        path = Path(value)
        if not path.is_file():
            raise TemplateError(f"data.chat_template_jinja: file '{value}' not found",
                                hint="give a path to a .jinja file or inline jinja text")
        return str(path), path.read_text(encoding="utf-8")
    return "inline", value


def _tokenizer_template(tokenizer: Any) -> str | None:
    text = getattr(tokenizer, "chat_template", None)
    if isinstance(text, dict):
        text = text.get("default")
    return text or None


def resolve_template(settings: Any, tokenizer: Any, registry: Any = None) -> ChatTemplate:
    """The template ``settings`` (``DataSettings``) ask for, with its end-of-turn string filled in.

    Order: ``chat_template_jinja`` > ``prefix_template``/``suffix_template`` > ``chat_template``
    (a registered name, or ``tokenizer``) > the tokenizer's own template > error.
    """
    eot = getattr(settings, "end_of_turn", None)
    if settings.chat_template_jinja:
        name, text = _jinja_source(settings.chat_template_jinja)
        template = ChatTemplate(name, text, eot)
    elif settings.prefix_template is not None or settings.suffix_template is not None:
        if settings.prefix_template is None or settings.suffix_template is None:
            raise TemplateError("turbo-style templates need both data.prefix_template and data.suffix_template",
                                hint="e.g. prefix_template: '<|im_start|>{role}\\n', suffix_template: '<|im_end|>\\n'")
        template = turbo_template(settings.prefix_template, settings.suffix_template,
                                      settings.role_tag_mapping, end_of_turn=eot)
    elif settings.chat_template and settings.chat_template != "tokenizer":
        if registry is None:
            from oa_core.plugins import get_registry

            registry = get_registry()
        try:
            template = registry.get("chat_template", settings.chat_template)
        except OAError as e:
            raise TemplateError(f"data.chat_template: {e.message}", hint=e.hint or "see `oa plugins list --kind chat_template`") from None
        if eot:
            template = dataclasses.replace(template, end_of_turn=eot)
    else:
        text = _tokenizer_template(tokenizer)
        if text is None:
            raise TemplateError(
                "the tokenizer has no chat template" + (" (data.chat_template: tokenizer)" if settings.chat_template else ""),
                hint="set data.chat_template to a built-in (oa plugins list --kind chat_template) or data.chat_template_jinja",
            )
        template = ChatTemplate("tokenizer", text, eot)
    return with_end_of_turn(template, tokenizer, settings.add_special_tokens)


def with_end_of_turn(template: ChatTemplate, tokenizer: Any, extra_tokens: Iterable[str] = ()) -> ChatTemplate:
    """``template`` with a concrete ``end_of_turn`` (the tokenizer's eos for eos-terminated built-ins)."""
    if template.end_of_turn:
        return template
    eot = infer_end_of_turn(template, tokenizer, extra_tokens)
    return dataclasses.replace(template, end_of_turn=eot)
