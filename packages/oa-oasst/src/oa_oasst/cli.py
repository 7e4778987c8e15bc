"""`oa data oasst export`: OASST export -> JSONL of SFT conversations, ranked replies or preference pairs."""

from __future__ import annotations

import click
from pydantic import ValidationError

from oa_core.errors import OAError

KINDS = ("sft", "ranked", "pairs")
HELP = "see 'oa data oasst export --help'"


def _name_values(values: tuple[str, ...], flag: str) -> dict[str, float]:
    """``("quality=0.5", ...)`` -> ``{"quality": 0.5}``."""
    out = {}
    for item in values:
        name, _, raw = item.partition("=")
        try:
            if not name.strip():
                raise ValueError
            out[name.strip()] = float(raw)
        except ValueError:
            raise OAError(f"{flag} '{item}': expected NAME=NUMBER", hint=f"e.g. {flag} quality=0.5") from None
    return out


def build_options(kind: str, given: dict):
    """Validate the flags given for ``--to kind`` into its options model (one-line error naming the flag)."""
    from oa_oasst.formats import CONVERSIONS

    model = CONVERSIONS[kind].options
    try:
        return model.model_validate(given)
    except ValidationError as e:
        err = e.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "options"
        if err["type"] == "extra_forbidden":
            raise OAError(f"{flag} does not apply to --to {kind}", hint=HELP) from None
        raise OAError(f"{flag}: {err['msg']}", hint=HELP) from None


@click.group("oasst")
def oasst() -> None:
    """Open-Assistant exports (message trees, plain or .gz)."""


@oasst.command("export")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False))
@click.option("--to", "kind", type=click.Choice(KINDS), required=True,
              help="sft: a conversation per thread; ranked: ranked sibling replies; pairs: preference pairs.")
@click.option("--lang", help="Comma-separated languages to keep, e.g. en,de (default: all).")
@click.option("--tree-state", "tree_states", multiple=True, help="Keep only trees in this state (repeatable).")
@click.option("--include-deleted", is_flag=True, help="Keep messages flagged deleted.")
@click.option("--include-synthetic", is_flag=True, help="Keep synthetic messages.")
@click.option("--any-review", is_flag=True, help="Keep messages whose review_result is not true.")
@click.option("--min-label", multiple=True, metavar="NAME=VALUE", help="Drop messages with a lower label value.")
@click.option("--max-label", multiple=True, metavar="NAME=VALUE", help="Drop messages with a higher label value.")
@click.option("--top-k", type=int, help="Threads go only through assistant replies of rank < k (an unranked "
              "one only when it is the only reply), as in Open-Assistant; ranked/pairs: the thread up to a fork.")
@click.option("--system-tag", is_flag=True, help="sft: add OA's metadata system message before assistant replies.")
@click.option("--tag-dropout", type=float, help="sft: probability to drop each system-tag field.")
@click.option("--tag-drop", multiple=True, metavar="FIELD=P", help="sft: drop probability of one tag field.")
@click.option("--seed", type=int, help="sft: seed of the system-tag dropout.")
@click.option("--pairs", "pair_mode", type=click.Choice(["best", "all"]), help="pairs: best vs rest, or all pairs.")
@click.option("--min-replies", type=int, help="ranked/pairs: skip forks with fewer ranked replies (default 2).")
@click.option("--strict", is_flag=True, help="Fail on the first bad tree instead of skipping it.")
def export_cmd(src, dst, kind, lang, tree_states, include_deleted, include_synthetic, any_review, min_label,
               max_label, top_k, system_tag, tag_dropout, tag_drop, seed, pair_mode, min_replies, strict) -> None:
    """Convert the OASST export IN (.jsonl or .jsonl.gz: trees, or messages) to records in OUT.jsonl."""
    from oa_oasst.export import export

    given = {
        "langs": lang, "tree_states": list(tree_states) or None, "include_deleted": include_deleted or None,
        "include_synthetic": include_synthetic or None, "require_review": False if any_review else None,
        "min_labels": _name_values(min_label, "--min-label") or None,
        "max_labels": _name_values(max_label, "--max-label") or None,
        "top_k": top_k, "system_tag": system_tag or None, "tag_dropout": tag_dropout,
        "tag_drop": _name_values(tag_drop, "--tag-drop") or None, "seed": seed, "pairs": pair_mode,
        "min_replies": min_replies, "strict": strict or None,
    }
    options = build_options(kind, {k: v for k, v in given.items() if v is not None})
    summary = export(src, dst, kind, options, progress=True)
    click.echo(summary.text(), err=True)
    click.echo(f"wrote {dst} ({summary.records} {kind} records)", err=True)


def add_commands(cli: click.Group) -> None:
    """Add the `oasst` group under `oa data` (created by oa-cli; added here when missing)."""
    data = cli.commands.get("data")
    if not isinstance(data, click.Group):
        data = click.Group("data", help="Prepare, preview, validate and export datasets.")
        cli.add_command(data)
    data.add_command(oasst)
