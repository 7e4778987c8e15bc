"""`oa data ...` commands."""

from __future__ import annotations


def add_commands(cli) -> None:
    """Add `preview`, `validate`, `stats` under the `oa data` group."""
