"""Hook implementations of oa-oasst: the `oasst.*` dataset formats and `oa data oasst`.

Imports stay inside the hooks so that loading this entry point is cheap.
"""

from __future__ import annotations

from oa_core import hookimpl


@hookimpl
def register_dataset_formats(register):
    from oa_oasst.formats import dataset_formats

    for name, fmt in dataset_formats().items():
        register(name, fmt)


@hookimpl
def register_commands(cli):
    from oa_oasst.cli import add_commands

    add_commands(cli)
