"""User-facing errors: one line, naming the file/record/field, with a hint."""

from __future__ import annotations


class OAError(Exception):
    """An error caused by user input (config, data, template, flag, plugin).

    The CLI prints ``str(error)`` as one line and exits with code 2; no traceback unless ``--debug``.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} (hint: {hint})")


class ConfigError(OAError):
    """A run config is invalid; ``problems`` holds one ``file: key.path: message`` line each."""

    def __init__(self, problems: list[str], hint: str | None = None):
        self.problems = problems
        super().__init__("\n".join(problems), hint)


class RecordError(OAError):
    """A data record is invalid: names the source file, record index and field."""


class PluginError(OAError):
    """A plugin failed to load or registered a duplicate name."""


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr, once per message and process."""
    import sys

    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr)
