"""Prompt templates: jinja text rendered in jinja2's immutable sandbox; an unknown name is an error (not an empty
string), and a template may use only the names its augmenter gives (checked when the config is read)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from oa_core.errors import OAError


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def template_problem(text: str, allowed: tuple[str, ...]) -> str | None:
    """Why ``text`` is not a usable template for an augmenter giving ``allowed`` names (None: it is)."""
    from jinja2 import TemplateSyntaxError, meta

    try:
        names = meta.find_undeclared_variables(_environment().parse(text))
    except TemplateSyntaxError as e:
        return f"template line {e.lineno}: {e.message}"
    unknown = sorted(names - set(allowed))
    if unknown:
        return (f"the template uses {', '.join(unknown)}, which this augmenter does not give "
                f"(it gives: {', '.join(allowed) or 'nothing'})")
    return None


class Template:
    """A compiled prompt template; :meth:`render` fills in the variables."""

    def __init__(self, text: str, where: str = "template"):
        self.text, self.where = text, where
        self._compiled = _environment().from_string(text)

    def render(self, **variables: Any) -> str:
        from jinja2 import UndefinedError

        try:
            return self._compiled.render(**variables)
        except UndefinedError as e:
            raise OAError(f"{self.where}: {e.message}", hint="use only the names the augmenter gives") from None
