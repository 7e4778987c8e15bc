"""Hook implementations of oa-data: built-in formats, chat templates, the `data:` config section and
`oa data` commands. Heavy imports stay inside the hooks' callees."""

from __future__ import annotations

from oa_core import hookimpl


@hookimpl
def register_dataset_formats(register):
    from oa_data.formats import register_formats

    register_formats(register)


@hookimpl
def register_chat_templates(register):
    from oa_data.templates import register_templates

    register_templates(register)


@hookimpl
def register_config_sections(register):
    from oa_data.settings import DataSettings

    register("data", DataSettings)


@hookimpl
def check_config(config):
    from oa_data.settings import check_data_config

    return check_data_config(config)


@hookimpl
def register_commands(cli):
    from oa_data.cli import add_commands

    add_commands(cli)
