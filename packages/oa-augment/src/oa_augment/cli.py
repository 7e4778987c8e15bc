"""``oa augment CONFIG`` or ``oa augment --augmenter NAME --input FILE --format FMT --output OUT.jsonl ...``."""

from __future__ import annotations

from typing import Any

import click

from oa_cli.options import config_or_flags, set_option
from oa_core.errors import OAError

# config key -> the flag that sets it (error messages name the flag)
FLAGS = {"augmenter": "--augmenter", "input.path": "--input", "input.format": "--format", "input.limit": "--limit",
         "input": "--input", "output": "--output", "generator": "--generator", "engine.model": "--model",
         "engine.base_url": "--base-url", "engine": "--engine", "options": "--option", "seed": "--seed",
         "concurrency": "--concurrency", "generation.max_new_tokens": "--max-new-tokens",
         "generation.temperature": "--temperature", "generation": "--max-new-tokens"}


def _key_values(items: tuple[str, ...], flag: str) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise OAError(f"{flag} '{item}': expected KEY=VALUE", hint=f"e.g. {flag} n=4")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def _config_data(flags: dict[str, Any]) -> dict[str, Any]:
    """The ``oa augment`` config that the flags describe."""
    def given(*keys: str) -> dict[str, Any]:
        return {k: flags[k] for k in keys if flags.get(k) is not None}

    engine = {**given("model", "base_url"), **_key_values(flags["engine_options"], "--engine")}
    data = {"augmenter": flags["augmenter"], "output": flags["output"],
            "input": {"path": flags["input_path"], "format": flags["fmt"], **given("limit")},
            "options": _key_values(flags["option"], "--option"),
            "generation": given("max_new_tokens", "temperature"), **given("generator", "seed", "concurrency")}
    if engine:
        data["engine"] = engine
    return data


@click.command("augment")
@click.argument("config_file", metavar="[CONFIG]", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--augmenter", help="A registered augmenter (oa plugins list --kind augmenter).")
@click.option("--input", "input_path", metavar="PATH", help="Records to augment (file, folder, glob or hub dataset).")
@click.option("--format", "fmt", help="Their dataset format (oa plugins list --kind dataset_format).")
@click.option("--limit", type=int, help="Only the first N records.")
@click.option("--output", help="Output .jsonl of oa.* records (resumed when its .augment folder exists).")
@click.option("--generator", help="openai (an HTTP endpoint), hf or vllm (with oa-infer).")
@click.option("--model", help="The model (the endpoint's model name, or a model folder for hf/vllm).")
@click.option("--base-url", help="The endpoint's base URL, up to and with /v1 (openai).")
@click.option("--engine", "engine_options", multiple=True, metavar="KEY=VALUE", help="Another generator setting.")
@click.option("--option", multiple=True, metavar="KEY=VALUE", help="An option of the augmenter (repeatable).")
@click.option("--max-new-tokens", type=int, help="Longest completion (tokens).")
@click.option("--temperature", type=float, help="Sampling temperature.")
@click.option("--seed", type=int, help="The run's seed (every record's seed derives from it).")
@click.option("--concurrency", type=int, help="Records augmented at once.")
@click.option("--dry-run", "dry_run", type=int, default=None, is_flag=False, flag_value=3, metavar="[N]",
              help="Show the prompts for the first N records (3) with stand-in answers; send and write nothing.")
def augment(config_file: str | None, overrides: tuple[str, ...], dry_run: int | None, **flags: Any) -> None:
    """Write new records from the records of a dataset with an augmenter and a generator, resumably.

    \b
    oa augment CONFIG [--set key.path=value] [--dry-run [N]]
    oa augment --augmenter answer --input data.jsonl --format alpaca --output out.jsonl \\
               --generator openai --model NAME --base-url http://127.0.0.1:8000/v1

    A restart with the same command continues where the last run stopped (also after kill -9); the output is
    written whole at the end, after the filters and duplicate removal, with a summary of every input.
    """
    from oa_augment.config import load_augment_config, validate
    from oa_augment.pipeline import preview, run_augment

    if config_or_flags(config_file, overrides, flags, command="augment",
                       required={"--augmenter": "augmenter", "--input": "input_path", "--format": "fmt",
                                 "--output": "output"},
                       usage="oa augment --augmenter NAME --input FILE --format FMT --output OUT.jsonl ...",
                       names={"input_path": "--input", "fmt": "--format", "engine_options": "--engine"}):
        config = load_augment_config(config_file, list(overrides))
    else:
        config = validate(_config_data(flags), {k: v for k, v in FLAGS.items()}, "command line")
    if dry_run is not None:
        click.echo(preview(config, dry_run))
        return
    summary = run_augment(config)
    for line in summary.lines():
        click.echo(line)
    if not summary.complete:
        raise click.exceptions.Exit(1)
