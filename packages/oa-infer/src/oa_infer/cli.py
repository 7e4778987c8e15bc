"""The oa-infer commands: `oa infer CONFIG` or `oa infer --model PATH --input FILE --output OUT.jsonl [...]`
here, `oa merge` and `oa chat` in :mod:`oa_infer.commands`."""

from __future__ import annotations

from typing import Any

import click

from oa_cli.options import config_or_flags, set_option
from oa_core.errors import OAError

# config key -> the flag that sets it (error messages name the flag)
FLAGS = {
    "engine.model": "--model", "engine.adapter": "--adapter", "engine.tokenizer": "--tokenizer",
    "engine.dtype": "--dtype", "engine.batch_size": "--batch-size", "engine.device": "--device",
    "engine.trust_remote_code": "--trust-remote-code", "engine": "--engine",
    "input.path": "--input", "input.format": "--format", "input.split": "--split", "input.limit": "--limit",
    "input": "--input", "output": "--output", "generator": "--generator", "task": "--score",
    "chunk_size": "--chunk-size",
    **{f"generation.0.{k}": f"--{k.replace('_', '-')}" for k in (
        "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "n", "seed", "stop", "logprobs")},
    "generation": "--max-new-tokens",
}


def add_commands(cli: click.Group) -> None:
    from oa_infer.commands import chat, merge

    for command in (infer, merge, chat, evaluate):
        cli.add_command(command)


@click.command("infer")
@click.argument("config_file", metavar="[CONFIG]", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--model", help="Model folder or hub id (a merged model, or the base of --adapter).")
@click.option("--adapter", help="A saved LoRA adapter to apply on top of --model.")
@click.option("--tokenizer", help="Tokenizer folder (default: the adapter's if it has one, else the model's).")
@click.option("--input", "input_path", metavar="PATH", help="Records to run on (file, folder, glob or hub dataset).")
@click.option("--format", "fmt", help="Their dataset format (default: guessed from the columns).")
@click.option("--split", help="Split of a hub dataset or of a split-keyed JSON file.")
@click.option("--limit", type=int, help="Only the first N records.")
@click.option("--output", help="Output .jsonl (resumed when it exists).")
@click.option("--score", is_flag=True, help="Score the records with a reward model / classifier instead.")
@click.option("--generator", help="Backend: hf (default) or vllm (oa plugins list --kind generator).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), help="Weight dtype.")
@click.option("--batch-size", type=int, help="Sequences generated (or scored) together.")
@click.option("--device", help="cpu, cuda, cuda:1 ... (hf; default: the GPU when there is one).")
@click.option("--trust-remote-code", is_flag=True, default=None, help="Run the model folder's own code.")
@click.option("--engine", "engine_options", multiple=True, metavar="KEY=VALUE",
              help="Another option of the generator, e.g. continuous_batching=true, tensor_parallel_size=2.")
@click.option("--max-new-tokens", type=int, help="Longest completion (tokens; default 256).")
@click.option("--temperature", type=float, help="0 (default): greedy decoding.")
@click.option("--top-p", type=float, help="Nucleus sampling mass.")
@click.option("--top-k", type=int, help="Sample among the k most likely tokens (0: no limit).")
@click.option("--repetition-penalty", type=float, help="Penalty for tokens already in the text (1: none).")
@click.option("--n", type=int, help="Completions per prompt.")
@click.option("--seed", type=int, help="Seed of the sampling.")
@click.option("--stop", multiple=True, help="A string that ends a completion (repeatable).")
@click.option("--logprobs", is_flag=True, default=None, help="Write the log-probability of every generated token.")
@click.option("--chunk-size", type=int, help="Records per output write (default 64).")
def infer(config_file: str | None, overrides: tuple[str, ...], **flags: Any) -> None:
    """Generate completions for (or score) the records of a dataset into a jsonl file, resumably.

    \b
    oa infer CONFIG [--set key.path=value]
    oa infer --model PATH [--adapter PATH] --input data.jsonl --output out.jsonl [--max-new-tokens 128] ...

    A restart with the same command continues where the last run stopped (also after kill -9).
    """
    from oa_infer.config import load_infer_config, validate
    from oa_infer.infer import run_infer

    if config_or_flags(config_file, overrides, flags, command="infer",
                       required={"--model": "model", "--input": "input_path", "--output": "output"},
                       usage="oa infer --model PATH --input FILE --output OUT.jsonl",
                       names={"input_path": "--input", "fmt": "--format", "engine_options": "--engine"}):
        config = load_infer_config(config_file, list(overrides))
    else:
        config = validate(_config_data(flags), {}, "command line", flags=FLAGS)
    for summary in run_infer(config):
        click.echo(summary.line())


def _config_data(flags: dict[str, Any]) -> dict[str, Any]:
    """The ``oa infer`` config that the flags describe."""
    import yaml

    def given(*keys: str) -> dict[str, Any]:
        return {k: flags[k] for k in keys if flags.get(k) not in (None, ())}

    engine = {"model": flags["model"], **given("adapter", "tokenizer", "dtype", "batch_size", "device",
                                               "trust_remote_code")}
    for item in flags["engine_options"]:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise OAError(f"--engine '{item}': expected KEY=VALUE", hint="e.g. --engine continuous_batching=true")
        engine[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    generation = given("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "n", "seed",
                       "logprobs")
    if flags["stop"]:
        generation["stop"] = list(flags["stop"])
    fmt, field_map = (flags["fmt"], {}) if flags["fmt"] else guess_input(flags["input_path"])
    source = {"path": flags["input_path"], "format": fmt, **({"field_map": field_map} if field_map else {}),
              **given("split", "limit")}
    data = {"task": "score" if flags["score"] else "generate", "engine": engine, "input": source,
            "output": flags["output"], "generation": generation, **given("generator", "chunk_size")}
    return data


# columns -> format, the first that matches (more specific first)
GUESSES = (
    ({"messages", "label"}, "classification"), ({"text", "label"}, "classification"),
    ({"prompt", "chosen", "rejected"}, "preference"), ({"chosen", "rejected"}, "hh_rlhf"),
    ({"prompt", "completion", "label"}, "kto"), ({"prompt", "replies"}, "ranked"),
    ({"prompt", "reference"}, "prompt_reference"), ({"messages"}, "openai"), ({"conversations"}, "sharegpt"),
    ({"instruction"}, "alpaca"), ({"text"}, "pretraining"),
)


# columns -> (format, field_map) for column names a format reads only through a field_map
MAPPED_GUESSES = (({"question", "answer"}, "prompt_reference", {"prompt": "question", "reference": "answer"}),)


def guess_format(path: str) -> str:
    """The dataset format a local file's columns point to; a one-line error when they point to none."""
    return guess_input(path)[0]


def guess_input(path: str) -> tuple[str, dict[str, str]]:
    """``(format, field_map)`` that a local file's columns point to (GSM8K's ``{question, answer}``: prompt_reference
    with a field map); a one-line error when they point to none."""
    from pathlib import Path

    from oa_data.loading import data_files, read_file

    if not Path(path).expanduser().exists():
        raise OAError(f"--input: '{path}' not found", hint="give a local file, or --format with a hub dataset id")
    columns = set(read_file(data_files(path)[0]).column_names)
    for needed, name in GUESSES:
        if needed <= columns:
            return name, {}
    for needed, name, field_map in MAPPED_GUESSES:
        if needed <= columns:
            return name, dict(field_map)
    raise OAError(f"{path}: cannot tell the dataset format from its columns ({', '.join(sorted(columns)) or 'none'})",
                  hint="give --format (oa plugins list --kind dataset_format), e.g. openai for {messages: [...]}")


# `oa eval` config key -> the flag that sets it
EVAL_FLAGS = {
    "models": "--model", "base": "--base", "output_dir": "--output-dir", "seed": "--seed", "reward": "--reward-model",
    "reward.model": "--reward-model", "select": "--select", "select.metric": "--select", "select.mode": "--mode",
    "datasets.0.path": "--input", "datasets.0.format": "--format", "datasets.0.split": "--split",
    "datasets.0.limit": "--limit", "datasets.0.metrics": "--metrics", "datasets.0.field_map": "--field-map",
    "datasets.0.pass_at_k.n": "--n", "datasets.0.pass_at_k.k": "--k", "datasets.0.pass_at_k": "--n",
    "datasets.0.name": "--input", "datasets": "--input",
    "generation.max_new_tokens": "--max-new-tokens", "generation.temperature": "--temperature",
    "generation": "--max-new-tokens",
    **{f"engine.{k}": f"--{k.replace('_', '-')}" for k in ("dtype", "batch_size", "device", "trust_remote_code")},
    "engine": "--engine",
}


@click.command("eval")
@click.argument("config_file", metavar="[CONFIG]", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--model", "models", multiple=True, metavar="PATH",
              help="A model folder, an adapter folder (on its base) or a run's output_dir (its checkpoints, then its "
              "model); repeatable.")
@click.option("--base", metavar="PATH", help="Base model of the adapters [default: each adapter's own base].")
@click.option("--input", "input_path", metavar="PATH", help="Records to evaluate on (file, folder, glob or hub dataset).")
@click.option("--format", "fmt", help="Their dataset format (default: guessed from the columns; {question, answer}: "
              "prompt_reference).")
@click.option("--field-map", "field_map", multiple=True, metavar="FIELD=COLUMN",
              help="A canonical field read from another column, e.g. prompt=question (repeatable).")
@click.option("--split", help="Split of a hub dataset or of a split-keyed JSON file.")
@click.option("--limit", type=int, help="Only the first N records.")
@click.option("--metrics", help="Comma-separated: bleu, rouge, exact_match, accuracy, pass_at_k, reward, perplexity.")
@click.option("--output-dir", metavar="DIR", help="Folder of the reports and generations.")
@click.option("--max-new-tokens", type=int, help="Longest answer (tokens; default 256).")
@click.option("--temperature", type=float, help="Temperature of the answers (0, the default: greedy).")
@click.option("--n", type=int, help="pass_at_k: answers sampled per prompt (default 10).")
@click.option("--k", "ks", metavar="K[,K...]", help="pass_at_k: the k values (default 1).")
@click.option("--reward-model", metavar="PATH", help="reward: the reward model that scores the answers.")
@click.option("--select", metavar="METRIC", help="Pick the best checkpoint by this metric, e.g. accuracy.")
@click.option("--mode", type=click.Choice(["max", "min"]), help="--select: the highest or the lowest value wins "
              "[default: min for perplexity, else max].")
@click.option("--seed", type=int, help="Seed of sampled answers (default 0).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), help="Weight dtype.")
@click.option("--batch-size", type=int, help="Sequences generated (or scored) together.")
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: the GPU when there is one).")
@click.option("--trust-remote-code", is_flag=True, default=None, help="Run the model folder's own code.")
@click.option("--engine", "engine_options", multiple=True, metavar="KEY=VALUE",
              help="Another option of the hf generator, e.g. continuous_batching=true.")
def evaluate(config_file: str | None, overrides: tuple[str, ...], **flags: Any) -> None:
    """Evaluate checkpoints on datasets: BLEU, ROUGE, exact match, final-number accuracy, pass@k, reward-model
    score, perplexity; a report per checkpoint and the best one by a metric.

    \b
    oa eval CONFIG [--set key.path=value]
    oa eval --model runs/sft --input data.jsonl --metrics bleu,rouge --output-dir runs/sft/eval [--select rougeL]

    Generations are resumable; a checkpoint evaluated before with the same settings is not evaluated again.
    """
    from rich.console import Console

    from oa_infer.eval_config import load_eval_config, validate
    from oa_infer.evaluate import best_line, run_eval, table

    if config_or_flags(config_file, overrides, flags, command="eval",
                       required={"--model": "models", "--input": "input_path", "--metrics": "metrics",
                                 "--output-dir": "output_dir"},
                       usage="oa eval --model PATH --input FILE --metrics bleu,rouge --output-dir DIR",
                       names={"input_path": "--input", "fmt": "--format", "engine_options": "--engine",
                              "models": "--model", "ks": "--k", "field_map": "--field-map"}):
        config = load_eval_config(config_file, list(overrides))
    else:
        config = validate(_eval_config_data(flags), {}, "command line", flags=EVAL_FLAGS)
    console = Console()
    result = run_eval(config, console=Console(stderr=True), source=config_file or "--model")
    console.print(table(result))
    console.print(best_line(result), soft_wrap=True, highlight=False)


def _eval_config_data(flags: dict[str, Any]) -> dict[str, Any]:
    """The ``oa eval`` config that the flags describe."""
    import yaml

    def pairs(items: tuple[str, ...], flag: str, example: str) -> dict[str, Any]:
        out = {}
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise OAError(f"{flag} '{item}': expected KEY=VALUE", hint=f"e.g. {flag} {example}")
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        return out

    def given(*keys: str) -> dict[str, Any]:
        return {k: flags[k] for k in keys if flags.get(k) not in (None, ())}

    engine = {**given("dtype", "batch_size", "device", "trust_remote_code"),
              **pairs(flags["engine_options"], "--engine", "continuous_batching=true")}
    field_map = {k: str(v) for k, v in pairs(flags["field_map"], "--field-map", "prompt=question").items()}
    fmt = flags["fmt"]
    if not fmt:
        fmt, guessed = guess_input(flags["input_path"])
        field_map = guessed | field_map
    dataset: dict[str, Any] = {"path": flags["input_path"], "format": fmt, **given("split", "limit"),
                               "metrics": [m.strip() for m in flags["metrics"].split(",") if m.strip()]}
    if field_map:
        dataset["field_map"] = field_map
    sampling = given("n")
    if flags["ks"]:
        try:
            sampling["k"] = [int(k) for k in flags["ks"].split(",") if k.strip()]
        except ValueError:
            raise OAError(f"--k '{flags['ks']}': expected whole numbers separated by commas", hint="e.g. --k 1,4") from None
    if sampling:
        dataset["pass_at_k"] = sampling
    data: dict[str, Any] = {"models": list(flags["models"]), "datasets": [dataset], "output_dir": flags["output_dir"],
                            **given("base", "seed")}
    if engine:
        data["engine"] = engine
    generation = given("max_new_tokens", "temperature")
    if generation:
        data["generation"] = generation
    if flags["reward_model"]:
        data["reward"] = {"model": flags["reward_model"]}
    if flags["select"] or flags["mode"]:
        data["select"] = {"metric": flags["select"], **given("mode")}
    return data
