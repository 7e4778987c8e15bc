"""`oa merge` and `oa chat`."""

from __future__ import annotations

import click

from oa_infer.merge import DTYPES


@click.command("merge")
@click.option("--adapter", required=True, metavar="PATH", help="Folder of a saved LoRA adapter (adapter_config.json).")
@click.option("--output", "-o", required=True, metavar="DIR", help="Folder to write the merged model into.")
@click.option("--base", metavar="PATH", help="Base model folder or hub id [default: the adapter's base_model_name_or_path].")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
              help="dtype of the saved weights (auto: the base's); the merge itself runs in float32.")
def merge(adapter: str, output: str, base: str | None, dtype: str) -> None:
    """Merge a LoRA adapter into its base and save a plain transformers model (with the adapter's tokenizer,
    chat template and a generation config that stops at the end of turn)."""
    from oa_infer.merge import merge_adapter

    done = merge_adapter(base, adapter, output, dtype=dtype)
    tying = "tied" if done.tied else "untied"
    click.echo(f"merged {adapter} into {done.base} -> {done.path} ({done.dtype}, {done.vocab_size} tokens, "
               f"{tying} embeddings, stops at token ids {done.eos_token_id})")


@click.command("chat")
@click.option("--model", required=True, metavar="PATH", help="Model folder or hub id, or a saved adapter's folder.")
@click.option("--adapter", metavar="PATH", help="A saved adapter to apply on --model.")
@click.option("--template", metavar="NAME", help="A registered chat template to use instead of the tokenizer's.")
@click.option("--system", metavar="TEXT", help="System prompt to start with (/system changes it).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True,
              help="Longest answer (tokens).")
@click.option("--temperature", type=click.FloatRange(min=0), help="Sampling temperature; 0: greedy "
              "[default: the model's generation config].")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), help="Nucleus sampling mass "
              "[default: the model's generation config].")
@click.option("--seed", type=int, help="Seed of the sampling.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True, help="dtype to load the weights in.")
def chat(model: str, adapter: str | None, template: str | None, system: str | None, max_new_tokens: int,
         temperature: float | None, top_p: float | None, seed: int | None, dtype: str) -> None:
    """Chat with a model in the terminal, through its saved chat template; answers stream as they are generated.

    \b
    /reset         forget the conversation (the system prompt stays)
    /system TEXT   set the system prompt (/system alone removes it)
    /help          these commands
    /exit, Ctrl-D  leave; Ctrl-C stops an answer
    """
    from oa_infer.chat import generation_options, load_chat, run_chat

    session = load_chat(model, adapter, template=template, dtype=dtype,
                        generation=generation_options(max_new_tokens, temperature, top_p))
    session.system = system
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    source = f"chat template {template}" if template else "the chat template saved with its tokenizer"
    click.echo(f"chat with {model}{f' + {adapter}' if adapter else ''} ({source}); /reset, /system TEXT, /exit or "
               "Ctrl-D to leave", err=True)
    run_chat(session)
