"""Options shared by the commands of every package (``oa data ...``, ``oa train ...``)."""

from __future__ import annotations

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config value (repeatable)."
)


def config_or_flags(config_file: str | None, overrides: tuple[str, ...], flags: dict, *, command: str,
                    required: dict[str, str], usage: str, names: dict[str, str] | None = None) -> bool:
    """For a command run as ``oa COMMAND CONFIG [--set ...]`` or with flags alone: one-line errors for flags given
    with CONFIG, ``--set`` without it, and the first flag missing that is ``required`` without it (flag -> its key
    in ``flags``; ``names``: keys whose flag is not ``--key-name``). True when CONFIG is given."""
    from oa_core.errors import OAError

    given = sorted(k for k, v in flags.items() if v not in (None, (), False))
    if config_file is not None:
        if given:
            flag = (names or {}).get(given[0], f"--{given[0].replace('_', '-')}")
            raise OAError(f"{flag}: give either CONFIG or flags", hint="change a config's values with --set key.path=value")
        return True
    if overrides:
        raise OAError("--set: changes a CONFIG's values; without CONFIG give flags", hint=f"see oa {command} --help")
    missing = [flag for flag, key in required.items() if not flags[key]]
    if missing:
        raise OAError(f"{missing[0]}: required without CONFIG", hint=usage)
    return False
