"""The :class:`ChatTemplate` object and its sandboxed jinja rendering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from oa_core.errors import OAError


class TemplateError(OAError):
    """A chat template failed to compile or to render."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template: jinja text (HF conventions: ``messages``, ``add_generation_prompt``,
    ``bos_token``, ``eos_token``) rendered in jinja2's immutable sandbox.

    ``end_of_turn`` is the string that closes a turn and is supervised with the answer (``None``: the
    tokenizer's eos token, or inferred from the rendering, see ``resolve_template``).
    ``special_tokens`` are strings the tokenizer must know as single tokens (added by
    ``oa_data.special_tokens.prepare_tokenizer``). Turbo-style templates (``prefix_template`` with
    ``{role}``, ``suffix_template``, ``role_tag_mapping``) are built with :meth:`turbo`.
    """

    name: str
    jinja: str
    end_of_turn: str | None = None
    special_tokens: tuple[str, ...] = ()
    description: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def turbo(
        cls,
        prefix_template: str,
        suffix_template: str,
        role_tag_mapping: Mapping[str, str] | None = None,
        *,
        name: str = "turbo",
        end_of_turn: str | None = None,
        special_tokens: tuple[str, ...] = (),
    ) -> ChatTemplate:
        """A turbo-alignment style template: every message is ``prefix(role) + content + suffix``;
        the generation prompt is ``prefix(assistant)``."""
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
        return cls(name, jinja, end_of_turn, special_tokens, "turbo-style prefix/suffix",
                   {"oa_prefixes": prefixes, "oa_suffix": suffix_template})

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, **variables: Any) -> str:
        """Render ``messages`` (dicts with ``role`` and ``content``); ``variables`` add e.g. ``bos_token``."""
        compiled = _compile(self.jinja, self.name)
        try:
            return compiled.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                **{**self.variables, **variables},
            )
        except TemplateError:
            raise
        except Exception as e:  # jinja UndefinedError, SecurityError, TypeError from inside the template
            raise TemplateError(f"chat template '{self.name}' failed to render: {type(e).__name__}: {_one_line(e)}",
                                hint="check the template's jinja against the messages' roles") from None


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
