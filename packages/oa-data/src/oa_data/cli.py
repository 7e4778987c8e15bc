"""`oa data preview|validate|stats CONFIG`: look at the data exactly as training will see it."""

from __future__ import annotations

import click

from oa_cli.options import set_option

split_option = click.option("--split", type=click.Choice(["train", "eval"]), default="train", show_default=True)


def add_commands(cli: click.Group) -> None:
    """Add `preview`, `validate`, `stats` under the `oa data` group."""
    group = cli.commands["data"]
    group.add_command(preview)
    group.add_command(validate)
    group.add_command(stats)


def _load(config: str, overrides: tuple[str, ...]):
    """The validated run config and its prepared tokenizer (as training prepares it)."""
    from oa_core.config import load_config
    from oa_data.tokenizer import prepare_run_tokenizer

    cfg = load_config(config, list(overrides)).config
    return cfg, prepare_run_tokenizer(cfg)


def _unsupervised(cfg, split: str) -> list[tuple[str, str]]:
    """(key, record type) of each dataset of ``split`` whose records are not SFT's (pairs, rankings, labels, RL
    prompts); formats are looked up in the registry, not read."""
    from oa_data.loading import SFT_RECORDS, record_type_name

    group = "datasets" if split == "train" else "eval_datasets"
    kinds = ((f"{group}.{i}", record_type_name(spec.format)) for i, spec in enumerate(getattr(cfg, group)))
    return [(key, kind) for key, kind in kinds if kind is not None and kind not in SFT_RECORDS]


def _specs(cfg, split: str):
    from oa_core.errors import OAError

    specs = list(cfg.datasets if split == "train" else cfg.eval_datasets)
    if not specs:
        key = "datasets" if split == "train" else "eval_datasets"
        raise OAError(f"the config has no `{key}`", hint=f"add entries under {key}:")
    return specs


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-n", "num", default=3, show_default=True, help="How many samples to show.")
@split_option
@set_option
def preview(config: str, num: int, split: str, overrides: tuple[str, ...]) -> None:
    """Show the first samples exactly as training gets them (encoded, truncated, chunked), with the supervised
    tokens highlighted (green: trained on). Pairs, rankings, labelled texts and RL prompts: the prompt and
    each reply, in file order."""
    from rich.console import Console

    from oa_data.pipeline import load_sources, preview_split
    from oa_data.settings import DataSettings

    cfg, run_tokenizer = _load(config, overrides)
    tokenizer, template = run_tokenizer.tokenizer, run_tokenizer.template
    specs = _specs(cfg, split)
    console = Console(soft_wrap=True, highlight=False)
    for note in run_tokenizer.notes:
        console.print(f"[yellow]tokenizer:[/yellow] {note}")
    if template is not None:
        console.print(f"[bold]template:[/bold] {template.name}  end of turn: {template.end_of_turn!r}")
    if _unsupervised(cfg, split):
        settings = cfg.section("data", DataSettings)
        sources = load_sources(specs, settings, strict=False, progress=False)
        _preview_records(console, sources, tokenizer, template, settings, num)
        return
    for i, fitted in enumerate(preview_split(cfg, run_tokenizer, split, num)):
        console.rule(f"sample {i}")
        console.print(f"{fitted.record.kind} ({fitted.source}: record {fitted.index}), {len(fitted.encoded)} tokens: "
                      f"{fitted.outcome}")
        if not fitted.samples:
            console.print(_colored(fitted.encoded, tokenizer))
        for k, enc in enumerate(fitted.samples):
            if len(fitted.samples) > 1:
                console.print(f"[bold]piece {k + 1}/{len(fitted.samples)}[/bold]")
            console.print(f"[bold]{len(enc)} tokens, {enc.num_supervised} supervised[/bold]")
            console.print(_colored(enc, tokenizer))


def _preview_records(console, sources, tokenizer, template, settings, num: int) -> None:
    """The first ``num`` records of pairs, rankings, labelled inputs or RL prompts, encoded and cut to length as
    their methods do (in file order: the mixing of datasets is not applied here)."""
    from types import SimpleNamespace

    from oa_data.candidates import fit_candidates

    shown = 0
    for spec, loaded in sources:
        for i, record in enumerate(loaded.records[:num - shown]):
            shown += 1
            console.rule(f"sample {shown - 1}")
            extra = f", label {record.label!r}" if hasattr(record, "label") else ""
            extra += f", reference {record.reference!r}" if hasattr(record, "reference") else ""
            console.print(f"{record.kind} ({loaded.where(i)}){extra}")
            encoded = _encode(record, tokenizer, template, settings, loaded.where(i))
            if isinstance(encoded, dict):  # candidate replies: the prompt, then each reply
                fitted = fit_candidates(encoded, spec.max_length or settings.max_length)
                if fitted is None:
                    console.print("[red]dropped[/red] (identical or empty replies)")
                    continue
                prompt = fitted["prompt_input_ids"]
                console.print(f"[bold]prompt, {len(prompt)} tokens[/bold]")
                console.print(_colored(SimpleNamespace(input_ids=prompt, labels=[-100] * len(prompt)), tokenizer))
                for k, (ids, labels) in enumerate(zip(fitted["candidate_input_ids"], fitted["candidate_labels"],
                                                      strict=True)):
                    console.print(f"[bold]reply {k + 1}, {len(ids)} tokens[/bold]")
                    console.print(_colored(SimpleNamespace(input_ids=ids, labels=labels), tokenizer))
            else:
                ids = encoded if isinstance(encoded, list) else encoded.input_ids
                console.print(f"[bold]{len(ids)} tokens[/bold]")
                console.print(_colored(SimpleNamespace(input_ids=ids, labels=[-100] * len(ids)), tokenizer))
        if shown >= num:
            return


def _colored(enc, tokenizer):
    """The decoded tokens, supervised runs in green."""
    from rich.text import Text as RichText

    from oa_data.tokenize import IGNORE_INDEX

    out = RichText()
    for is_label, ids in _runs(enc.input_ids, [x != IGNORE_INDEX for x in enc.labels]):
        out.append(tokenizer.decode(ids), style="bold green" if is_label else "dim")
    return out


def _runs(ids: list[int], flags: list[bool]):
    start = 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or flags[k] != flags[start]:
            yield flags[start], ids[start:k]
            start = k


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@split_option
@set_option
def validate(config: str, split: str, overrides: tuple[str, ...]) -> None:
    """Check every record: format fields, schema, template rendering, loss masks. Lists all problems."""
    from tqdm.auto import tqdm

    from oa_core.errors import OAError
    from oa_data.pipeline import load_sources
    from oa_data.settings import DataSettings

    cfg, run_tokenizer = _load(config, overrides)
    tokenizer, template = run_tokenizer.tokenizer, run_tokenizer.template
    settings = cfg.section("data", DataSettings)
    sources = load_sources(_specs(cfg, split), settings, strict=False)
    problems = [e for _, loaded in sources for e in loaded.errors]
    checked = 0
    for _, loaded in sources:
        for i, record in enumerate(tqdm(loaded.records, desc=f"checking {loaded.source}", leave=False)):
            checked += 1
            try:
                _encode(record, tokenizer, template, settings, loaded.where(i))
            except OAError as e:
                problems.append(str(e))
    rows = sum(loaded.n_rows for _, loaded in sources)
    for line in problems:
        click.echo(f"error: {line}", err=True)
    click.echo(f"{rows} rows read, {checked} records encoded, {len(problems)} problem(s)")
    if problems:
        raise click.exceptions.Exit(2)


def _encode(record, tokenizer, template, settings, where: str):
    """Encode a record as the methods that take its kind do (supervised records for SFT, pairs and rankings for
    reward models and preference optimisation, labelled inputs for classification, prompts for RL)."""
    from types import SimpleNamespace

    from oa_core.errors import RecordError
    from oa_core.schema import Classification, PromptWithReference
    from oa_data.candidates import RECORDS, encode_candidates
    from oa_data.classification import encode_input
    from oa_data.tokenize import encode_messages, encode_record

    if isinstance(record, RECORDS):
        return encode_candidates(record, tokenizer, template, source=where)
    if isinstance(record, Classification):
        return encode_input(record, tokenizer, template, where)
    if isinstance(record, PromptWithReference):
        if template is None:
            raise RecordError(f"{where}: a prompt needs a chat template", hint="set data.chat_template")
        prompt_only = SimpleNamespace(train_on_inputs=True, only_answer_loss=False)
        return encode_messages(record.prompt, tokenizer, template, prompt_only, source=where, check=False)
    return encode_record(record, tokenizer, template, settings, source=where)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@split_option
@click.option("--no-cache", is_flag=True, help="Rebuild instead of loading the tokenized cache.")
@set_option
def stats(config: str, split: str, no_cache: bool, overrides: tuple[str, ...]) -> None:
    """Counts, length histogram, supervised fraction and packing efficiency of the prepared data."""
    from oa_core.errors import OAError
    from oa_data.pipeline import prepare_split

    cfg, run_tokenizer = _load(config, overrides)
    _specs(cfg, split)
    for key, kind in _unsupervised(cfg, split):
        raise OAError(f"{key}: `oa data stats` measures supervised (SFT) data, this dataset gives {kind} records",
                      hint="`oa data preview` and `oa data validate` show and check them; `oa train` reports "
                           "their counts and cuts")
    prepared = prepare_split(cfg, run_tokenizer, split, use_cache=not no_cache)
    for line in prepared.report.lines():
        click.echo(line)
    lengths = [len(x) for x in prepared.dataset["input_ids"]]
    supervised = sum(sum(1 for t in labels if t != -100) for labels in prepared.dataset["labels"])
    click.echo(f"rows: {len(lengths)}  tokens: {sum(lengths)}  supervised tokens: {supervised} "
               f"({supervised / max(sum(lengths), 1):.1%})  min/mean/max length: {min(lengths)}/"
               f"{sum(lengths) / len(lengths):.0f}/{max(lengths)}")
    for line in histogram(lengths):
        click.echo(line)


def histogram(values: list[int], bins: int = 10, width: int = 40) -> list[str]:
    """An ASCII histogram of ``values``: one line per bin, ``[lo, hi) count bar``."""
    lo, hi = min(values), max(values)
    step = max((hi - lo + bins) // bins, 1)
    counts = [0] * bins
    for v in values:
        counts[min((v - lo) // step, bins - 1)] += 1
    top = max(counts)
    return [f"  {lo + k * step:>6}-{lo + (k + 1) * step - 1:<6} {c:>6} {'#' * round(width * c / top)}"
            for k, c in enumerate(counts)]
