"""Hook implementations of oa-infer (registered through the ``oa`` entry point). Nothing heavy is imported here."""

from __future__ import annotations

from oa_core import hookimpl


@hookimpl
def register_commands(cli):
    from oa_infer.commands import add_commands

    add_commands(cli)
