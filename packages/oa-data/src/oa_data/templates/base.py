"""Rendering :class:`~oa_core.extensions.ChatTemplate` objects in jinja2's immutable sandbox, with Hugging Face's settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from oa_core.errors import OAError
from oa_core.extensions import ChatTemplate


class TemplateError(OAError):
    """A chat template failed to compile or to render."""


def turbo_template(
    prefix_template: str,
    suffix_template: str,
    role_tag_mapping: Mapping[str, str] | None = None,
    *,
    name: str = "turbo",
    end_of_turn: str | None = None,
    special_tokens: tuple[str, ...] = (),
) -> ChatTemplate:
    """A turbo-alignment style template: every message is ``prefix(role) + content + suffix``; the generation
    prompt is ``prefix(assistant)``."""
    if "{role}" not in prefix_template:
        raise TemplateError(
            f"prefix_template {prefix_template!r} has no '{{role}}'", hint="e.g. '<|im_start|>{role}\\n'"
        )
    tags = {r: (role_tag_mapping or {}).get(r, r) for r in ("system", "user", "assistant", "tool")}
    prefixes = {r: prefix_template.replace("{role}", tag) for r, tag in tags.items()}
    jinja = (
        "{% for m in messages %}{{ oa_prefixes[m['role']] + m['content'] + oa_suffix }}{% endfor %}"
        "{% if add_generation_prompt %}{{ oa_prefixes['assistant'] }}{% endif %}"
    )
    if end_of_turn is None:
        end_of_turn = suffix_template.strip() or None
    return ChatTemplate(name, jinja, end_of_turn, special_tokens, "turbo-style prefix/suffix",
                        {"oa_prefixes": prefixes, "oa_suffix": suffix_template})


def render(template: ChatTemplate, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
           **variables: Any) -> str:
    """Render ``messages`` (dicts with ``role`` and ``content``) with ``template``; ``variables`` add e.g.
    ``bos_token``."""
    compiled = _compile(template.jinja, template.name)
    try:
        return compiled.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            **{**template.variables, **variables},
        )
    except TemplateError:
        raise
    except Exception as e:  # jinja UndefinedError, SecurityError, TypeError from inside the template
        raise TemplateError(f"chat template '{template.name}' failed to render: {type(e).__name__}: {_one_line(e)}",
                            hint="check the template's jinja against the messages' roles") from None


def standalone_jinja(template: ChatTemplate) -> str:
    """The template as one jinja text with its ``variables`` inlined, for ``tokenizer.chat_template``: Hugging
    Face's ``apply_chat_template`` (and vLLM) then render exactly what training rendered."""
    import json

    lines = [f"{{%- set {k} = {json.dumps(v, ensure_ascii=False)} -%}}" for k, v in template.variables.items()]
    return "".join(lines) + template.jinja


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    from datetime import datetime

    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=64)
def _compile(text: str, name: str):
    """Compile ``text`` in jinja2's immutable sandbox with Hugging Face's settings."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template '{name}': line {e.lineno}: {_one_line(e)}",
                            hint="fix the jinja syntax of the template") from None
