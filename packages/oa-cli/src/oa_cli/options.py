"""Options shared by the commands of every package (``oa data ...``, ``oa train ...``)."""

from __future__ import annotations

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config value (repeatable)."
)
