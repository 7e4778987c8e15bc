"""An interactive chat with a model in the terminal, through its saved chat template, streaming the answer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from oa_core.errors import OAError
from oa_core.extensions import ChatTemplate

HELP = "/reset forget the conversation, /system TEXT set the system prompt (/system alone: none), /exit leave"


@dataclass
class ChatSession:
    """A conversation with ``model``: ``history`` holds the user and assistant turns, ``system`` the system prompt
    rendered before them. ``generation`` are keyword arguments for ``generate`` (sampling options)."""

    model: Any
    tokenizer: Any
    template: ChatTemplate
    stop_ids: list[int]
    generation: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def prompt(self) -> str:
        """The conversation rendered with the template and the assistant's turn opened."""
        from oa_infer.prompting import render_prompt

        return render_prompt(self.template, self.tokenizer, self.messages())

    def reset(self) -> None:
        self.history.clear()

    def reply(self, text: str, write: Callable[[str], Any] = lambda s: None) -> str:
        """Answer ``text``: the answer's text goes to ``write`` as it is generated, and both turns join the
        history. On an error or Ctrl-C the user's turn is taken back."""
        import torch

        self.history.append({"role": "user", "content": text})
        try:
            ids = self.tokenizer(self.prompt(), add_special_tokens=False, return_tensors="pt")["input_ids"]
            limit = getattr(self.model.config, "max_position_embeddings", None)
            if limit and ids.shape[1] >= limit:
                raise OAError(f"the conversation is {ids.shape[1]} tokens, the model takes {limit}",
                              hint="/reset to start a new one")
            ids = ids.to(self.model.device)
            streamer = TextSink(self.tokenizer, write)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
            with torch.no_grad():
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                          eos_token_id=self.stop_ids, pad_token_id=pad, **self.generation)
        except BaseException:
            self.history.pop()
            raise
        answer = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        self.history.append({"role": "assistant", "content": answer.strip()})
        return answer


class TextSink:
    """A ``generate`` streamer that writes the answer's text as it grows (the prompt is skipped). The pieces add
    up to the decoded answer: each step decodes the whole answer and writes what is new, holding back a
    character that is not complete yet."""

    def __init__(self, tokenizer: Any, write: Callable[[str], Any]):
        self.tokenizer, self.write = tokenizer, write
        self.ids: list[int] = []
        self.shown = ""
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._show(self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd"))

    def end(self) -> None:
        self._show(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _show(self, text: str) -> None:
        if len(text) > len(self.shown) and text.startswith(self.shown):
            self.write(text[len(self.shown):])
            self.shown = text


def load_chat(model: str, adapter: str | None = None, *, template: str | None = None, dtype: str = "auto",
              generation: dict[str, Any] | None = None) -> ChatSession:
    """A session with the model saved at ``model`` (or the base of the adapter saved there), with the adapter
    ``adapter``; the tokenizer is the adapter's when it saved one. ``template`` names a registered chat template
    to use instead of the tokenizer's."""
    from oa_core.generation import GeneratorSettings
    from oa_data.hub import resolve_source
    from oa_infer.adapters import read_adapter
    from oa_infer.loader import load_pretrained
    from oa_infer.prompting import chat_template, stop_token_ids

    resolve_source(model, "--model")  # a one-line error for a local folder that is not there
    info = None
    if adapter is None and (Path(model).expanduser() / "adapter_config.json").is_file():
        info = read_adapter(model, "--model")  # an adapter folder: chat with it on its base
        if not info.base:
            raise OAError(f"--model: the adapter in '{model}' does not name its base model",
                          hint="pass --model BASE --adapter ADAPTER")
        model, adapter = info.base, model
    elif adapter is not None:
        info = read_adapter(adapter)
    net, tokenizer = load_pretrained(GeneratorSettings(model=model, adapter=adapter, dtype=dtype))
    chosen = chat_template(tokenizer, template, where="--adapter" if info and info.has_tokenizer else "--model")
    eos = net.generation_config.eos_token_id
    stops = [*stop_token_ids(tokenizer, chosen)]
    stops += [i for i in (eos if isinstance(eos, list) else [eos]) if i is not None and i not in stops]
    if not stops:
        raise OAError(f"--model: '{model}' names no end-of-sequence token", hint="its tokenizer needs an eos token")
    return ChatSession(net, tokenizer, chosen, stops, generation or {})


def generation_options(max_new_tokens: int, temperature: float | None, top_p: float | None) -> dict[str, Any]:
    """``generate`` keyword arguments; sampling options left out keep the model's generation config."""
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if temperature is not None:
        options["do_sample"] = temperature > 0
        if temperature > 0:
            options["temperature"] = temperature
    if top_p is not None:
        options["top_p"] = top_p
    return options


def run_chat(session: ChatSession, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    """Read user turns and commands from ``stdin`` until /exit or its end (Ctrl-D), streaming the answers to
    ``stdout``. An error in a turn is printed and the chat goes on; Ctrl-C stops an answer."""
    stdout = stdout or sys.stdout
    read = _line_reader(stdin or sys.stdin, stdout)

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    while True:
        try:
            line = read("user> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            if command in ("/exit", "/quit"):
                return
            if command == "/reset":
                session.reset()
                write("(conversation reset)\n")
            elif command == "/system":
                session.system = arg.strip() or None
                write(f"(system prompt {'set' if session.system else 'removed'})\n")
            elif command == "/help":
                write(HELP + "\n")
            else:
                write(f"unknown command {command}: {HELP}\n")
            continue
        write("assistant> ")
        try:
            session.reply(line, write)
            write("\n")
        except KeyboardInterrupt:
            write("\n(answer stopped)\n")
        except OAError as e:
            write(f"\nerror: {' '.join(str(e).split())}\n")


def _line_reader(stdin: TextIO, stdout: TextIO) -> Callable[[str], str]:
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        return input

    def read(prompt: str) -> str:
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read
