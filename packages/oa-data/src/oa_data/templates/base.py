"""Rendering :class:`~oa_core.extensions.ChatTemplate` objects in jinja2's immutable sandbox, with Hugging Face's settings."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from oa_core.errors import OAError
from oa_core.extensions import ChatTemplate


class TemplateError(OAError):
    """A chat template failed to compile or to render."""


ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"bot": "assistant"}  # turbo-alignment's dataset role names (its guide keys role_tag_mapping by them)


def role_tag_problems(role_tag_mapping: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """``(key, message)`` for every key of ``role_tag_mapping`` that names no role, and for ``bot`` and
    ``assistant`` given different tags."""
    mapping = role_tag_mapping or {}
    known = ", ".join((*ROLES, *ROLE_ALIASES))
    problems = [(k, f"unknown role '{k}' (known: {known})") for k in mapping if k not in ROLES and k not in ROLE_ALIASES]
    for alias, role in ROLE_ALIASES.items():
        if alias in mapping and role in mapping and mapping[alias] != mapping[role]:
            problems.append((alias, f"'{alias}' is the role '{role}', which is mapped to another tag "
                                    f"({mapping[alias]!r} vs {mapping[role]!r})"))
    return problems


def role_tags(role_tag_mapping: Mapping[str, str] | None) -> dict[str, str]:
    """The tag rendered for each role: ``role_tag_mapping``'s (keys: roles, or ``bot`` for ``assistant``),
    else the role's name."""
    problems = role_tag_problems(role_tag_mapping)
    if problems:
        key, message = problems[0]
        raise TemplateError(f"role_tag_mapping.{key}: {message}",
                            hint="map the roles of the records: system, user, assistant (or bot), tool")
    mapping = {ROLE_ALIASES.get(k, k): v for k, v in (role_tag_mapping or {}).items()}
    return {r: mapping.get(r, r) for r in ROLES}


def turbo_template(
    prefix_template: str,
    suffix_template: str,
    role_tag_mapping: Mapping[str, str] | None = None,
    *,
    name: str = "turbo",
    end_of_turn: str | None = None,
    special_tokens: tuple[str, ...] = (),
) -> ChatTemplate:
    """A turbo-alignment style template: every message is ``prefix(tag) + content + suffix``; the generation
    prompt is ``prefix(tag of assistant)``. Tags come from :func:`role_tags`."""
    if "{role}" not in prefix_template:
        raise TemplateError(
            f"prefix_template {prefix_template!r} has no '{{role}}'", hint="e.g. '<|im_start|>{role}\\n'"
        )
    prefixes = {r: prefix_template.replace("{role}", tag) for r, tag in role_tags(role_tag_mapping).items()}
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


GENERATION_MARKS = ("\ue004", "\ue005")  # bracket {% generation %} blocks in a tracked rendering
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(template: ChatTemplate) -> bool:
    """Whether the template marks assistant output with ``{% generation %}`` ... ``{% endgeneration %}``."""
    return _GENERATION_TAG.search(template.jinja) is not None


def render_generation(template: ChatTemplate, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                      **variables: Any) -> tuple[str, list[tuple[int, int]]]:
    """The rendering and the character spans of its ``{% generation %}`` blocks (what Hugging Face's
    ``return_assistant_tokens_mask`` marks as assistant output)."""
    marked = render(template, messages, add_generation_prompt, oa_track_generation=True, **variables)
    pieces, spans, depth, length, start = [], [], 0, 0, 0
    for piece in re.split(f"([{''.join(GENERATION_MARKS)}])", marked):
        if piece == GENERATION_MARKS[0]:
            start = length if depth == 0 else start
            depth += 1
        elif piece == GENERATION_MARKS[1]:
            depth -= 1
            if depth == 0 and length > start:
                spans.append((start, length))
        else:
            pieces.append(piece)
            length += len(piece)
    return "".join(pieces), spans


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


def _generation_extension():
    """Hugging Face's ``{% generation %}`` ... ``{% endgeneration %}`` tag: its body renders unchanged; in a
    tracked rendering (``oa_track_generation``) it is bracketed by :data:`GENERATION_MARKS`."""
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            tracked = nodes.Name("oa_track_generation", "load")
            return nodes.CallBlock(self.call_method("_block", [tracked]), [], [], body).set_lineno(lineno)

        def _block(self, tracked: Any, caller) -> str:
            text = caller()
            return f"{GENERATION_MARKS[0]}{text}{GENERATION_MARKS[1]}" if tracked is True else text

    return Generation


@lru_cache(maxsize=64)
def _compile(text: str, name: str):
    """Compile ``text`` in jinja2's immutable sandbox with Hugging Face's settings."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols, _generation_extension()])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template '{name}': line {e.lineno}: {_one_line(e)}",
                            hint="fix the jinja syntax of the template") from None
