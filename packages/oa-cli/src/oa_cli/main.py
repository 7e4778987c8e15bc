"""The ``oa`` command line. Packages and plugins add commands through the ``register_commands`` hook."""

from __future__ import annotations

import json
import os
import sys

import click

from oa_cli.options import set_option
from oa_core import OAError, __version__
from oa_core.errors import ConfigError
from oa_core.plugins import get_plugin_manager

USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="oa", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """oa: post-training for language models: data preparation, SFT and continued pretraining.

    \b
    Start with:  oa plugins list            what is installed
                 oa env                     versions and GPUs, for bug reports
                 oa config validate FILE    check a run config
                 oa train FILE              run it (needs oa-train)
    """


@cli.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.option("--kind", help="Only this kind (dataset_format, chat_template, model_patch, loss, ...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_list(kind: str | None, as_json: bool) -> None:
    """List what each plugin registered: name, kind, provider package and version."""
    from oa_core.plugins import KINDS, get_registry

    reg = get_registry()
    if kind and kind not in KINDS.values():
        raise OAError(f"unknown kind '{kind}'", hint=f"one of {', '.join(KINDS.values())}")
    rows = [
        {
            "name": e.name,
            "kind": e.kind,
            "provider": e.provider.distribution,
            "version": e.provider.version,
            "status": "duplicate" if (e.kind, e.name) in reg.duplicates else "ok",
        }
        for e in reg.entries(kind)
    ]
    for (k, name), providers in reg.duplicates.items():
        if not kind or k == kind:
            rows += [
                {"name": name, "kind": k, "provider": p.distribution, "version": p.version, "status": "duplicate"}
                for p in providers[1:]
            ]
    broken = [str(f) for f in reg.failures]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "broken": broken}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "provider", "version", "status", box=None, header_style="bold")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["provider"], r["version"], r["status"])
    console = Console(soft_wrap=True)
    console.print(table)
    for line in broken:
        console.print(f"[red]broken:[/red] {line}", highlight=False)


@cli.command("env")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def env(as_json: bool) -> None:
    """Print versions, GPUs and installed plugins (paste it into bug reports)."""
    from oa_core.environment import environment_info

    info = environment_info()
    click.echo(json.dumps(info, indent=2) if as_json else env_text(info))


def env_text(info: dict) -> str:
    """``environment_info()`` as aligned text."""
    py = info["python"]
    lines = [f"oa {info['oa']}", f"python    {py['version']} ({py['implementation']}, {py['executable']})",
             f"platform  {info['platform']}", "", "packages"]
    lines += [f"  {name:<20} {version}" for name, version in info["packages"].items()]
    lines += ["plugins"] + [f"  {p['name']:<20} {p['distribution']} {p['version']}".rstrip() for p in info["plugins"]]
    if info["disabled"]:
        lines.append(f"  disabled: {', '.join(info['disabled'])}")
    lines += ["libraries"] + [f"  {name:<20} {version or 'not installed'}" for name, version in info["libraries"].items()]
    gpu = info["gpu"] or {}
    built = [f"{name} {gpu[key]}" for name, key in (("CUDA", "cuda_build"), ("HIP", "hip_build")) if gpu.get(key)]
    if gpu:
        torch = f"built with {' and '.join(built)}" if built else "unknown" if "error" in gpu else "CPU build"
    else:
        torch = "not queried" if info["libraries"].get("torch") else "not installed"
    rows = [("torch", torch), ("driver", gpu.get("driver")), ("nccl", gpu.get("nccl")),
            ("CUDA_VISIBLE_DEVICES", gpu.get("visible_devices")), ("error", gpu.get("error"))]
    rows += [(f"cuda:{i}", f"{d['name']} (compute capability {d['capability']}, {d['memory_gib']} GiB)")
             for i, d in enumerate(gpu.get("devices", []))]
    if gpu and not gpu["available"]:
        rows.append(("devices", "no usable GPU"))
    lines += ["gpu"] + [f"  {key:<20} {value}" for key, value in rows if value is not None]
    if info["broken"]:
        lines += ["broken plugins"] + [f"  {line}" for line in info["broken"]]
    return "\n".join(lines)


@cli.group()
def data() -> None:
    """Prepare, preview, validate and export datasets (commands come from oa-data, oa-oasst, ...)."""


@cli.group()
def config() -> None:
    """Validate run configs and print their JSON Schema."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@set_option
def config_validate(file: str, overrides: tuple[str, ...]) -> None:
    """Check a run config; print every problem as `file: key.path: message`."""
    from oa_core.config import load_config

    loaded = load_config(file, list(overrides))
    cfg = loaded.config
    click.echo(f"{file}: ok (method {cfg.method}, {len(cfg.datasets)} dataset(s), output_dir {cfg.output_dir})")


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@set_option
def config_show(file: str, overrides: tuple[str, ...]) -> None:
    """Print the effective config (includes and overrides applied, secrets redacted) with sources."""
    import yaml

    from oa_core.config import load_config

    loaded = load_config(file, list(overrides))
    click.echo(yaml.safe_dump({"config": loaded.effective(), "sources": loaded.sources}, sort_keys=False))


@config.command("schema")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def config_schema(output: str | None) -> None:
    """Print the JSON Schema of run configs (for editors), plugin options included."""
    from oa_core.config import json_schema
    from oa_core.io import atomic_write_text

    text = json.dumps(json_schema(), indent=2)
    if output:
        atomic_write_text(output, text + "\n")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


def _add_plugin_commands() -> None:
    pm = get_plugin_manager()
    for failure in pm.load_failures:
        click.echo(f"warning: {failure}", err=True)
    for impl, provider in pm.hook_impls("register_commands"):
        try:
            impl.function(cli)
        except Exception as e:
            click.echo(f"warning: plugin '{provider.plugin}' ({provider.distribution}) could not add its "
                       f"commands: {type(e).__name__}: {e}", err=True)


ERROR_FILE_ENV = "OA_ERROR_FILE"  # set by a launching `oa` for its worker processes


def _fail(message: str) -> None:
    """Print a user error; in a worker process started by `oa`, hand it to the launcher instead, which prints it
    once for all workers."""
    launcher = os.environ.get(ERROR_FILE_ENV)
    if launcher:
        with open(f"{launcher}.{os.environ.get('RANK', '0')}", "w", encoding="utf-8") as f:
            f.write(message)
        return
    for line in message.splitlines() or [message]:
        click.echo(f"error: {line}", err=True)


def _missing_command(e: click.ClickException) -> str | None:
    """For "No such command 'train'": the package that provides it, when that package is not installed."""
    import re

    from oa_core.packages import missing_package

    found = re.match(r"No such command '([^']+)'", e.format_message())
    return missing_package("command", found.group(1)) if found else None


def _os_error(e: OSError) -> str:
    from pathlib import Path

    name = e.filename or "file"
    if isinstance(e, FileExistsError | NotADirectoryError) and Path(str(name)).is_file():
        return f"{name}: is a file, but a folder is needed there (hint: choose another path)"
    return f"{name}: {e.strerror or e}" + (f" -> {e.filename2}" if e.filename2 else "")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print one line each and exit 2 (tracebacks with --debug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("OA_DEBUG") == "1"
    try:
        _add_plugin_commands()
        code = cli.main(argv, prog_name="oa", standalone_mode=False)  # a command's Exit(code) comes back here
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        if debug:
            raise
        ctx = getattr(e, "ctx", None)
        ctx_help = f" (see '{ctx.command_path} --help')" if isinstance(e, click.UsageError) and ctx else ""
        _fail(_missing_command(e) or e.format_message() + ctx_help)
        return USER_ERROR
    except ConfigError as e:
        if debug:
            raise
        _fail(str(e))
        return USER_ERROR
    except OAError as e:
        if debug:
            raise
        _fail(str(e).replace("\n", " "))
        return USER_ERROR
    except OSError as e:  # a path the user gave: missing, a file where a folder is needed, no permission, disk full
        if debug:
            raise
        _fail(_os_error(e))
        return USER_ERROR
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0


def _exit_worker(code: int) -> None:
    """End a worker process that `oa` launched without the interpreter's shutdown. Its outputs are written and
    closed by then; torch's gloo/NCCL threads, which DDP keeps alive past ``destroy_process_group``, can abort that
    shutdown (``terminate called without an active exception``) and turn a finished run into a crash."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if os.environ.get(ERROR_FILE_ENV):
        _exit_worker(exit_code)
    sys.exit(exit_code)
