"""``oa infer``: run a generator (or a scoring model) over the records of a dataset into resumable jsonl files.

Each output line is one input record: its ``index`` (0-based, in input order), ``id`` (when the record has one),
``source`` (``file:LINE``), the ``prompt`` (or the scored ``inputs``), the ``reference`` answer when the record
has one, the ``completions`` (``text``, ``finish_reason``, ``num_tokens``, ``logprobs`` when asked) or
``scores``, and the ``settings`` that made it. Outputs are journals (:mod:`oa_core.journal`): a run that is
stopped, even by kill -9, continues where it was with the same command, and refuses to continue an output made
from other inputs or settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oa_core.errors import OAError
from oa_core.generation import Completion, GenerationParams, Prompt
from oa_core.journal import Journal
from oa_infer.config import InferConfig, InputSpec, engine_settings


@dataclass
class Item:
    """One input record as inference uses it."""

    index: int
    source: str
    id: Any
    prompt: Prompt | None = None
    reference: str | None = None
    inputs: list[tuple[str, Prompt]] | None = None  # scoring: named sequences
    record: Any = None  # the record as its format read it


@dataclass
class Summary:
    """What one output got: records in it now, from this run and from an earlier one, tokens, time."""

    output: Path
    records: int
    new: int
    earlier: int
    tokens: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = f", {self.tokens / self.seconds:,.0f} tokens/s" if self.tokens and self.seconds > 0 else ""
        tokens = f", {self.tokens:,} tokens generated" if self.tokens else ""
        earlier = f" ({self.earlier} from an earlier run)" if self.earlier else ""
        return (f"{self.output}: {self.records} records{earlier}, {self.new} new{tokens} in "
                f"{self.seconds:.1f} s{rate}")


def load_items(spec: InputSpec, task: str = "generate", *, progress: bool | None = None) -> list[Item]:
    """The records of ``spec`` (read through its dataset format; bad rows are one-line errors naming file,
    line and field) with their prompts, or their sequences to score."""
    from oa_core.generation import generation_prompt
    from oa_data.loading import load_input
    from oa_infer.prompts import reference, scoring_inputs

    loaded, records = load_input(spec, purpose="to run on", progress=progress)
    items = []
    for k, record in enumerate(records):
        where = loaded.where(k)
        item = Item(k, where, record.metadata.get("id"), record=record)
        if task == "score":
            item.inputs = scoring_inputs(record)
        else:
            item.prompt, item.reference = generation_prompt(record, where), reference(record)
        items.append(item)
    return items


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False))


def check_resumable(journal: Journal, items: Sequence[Item], settings: dict[str, Any]) -> None:
    """A one-line error when the records already in ``journal`` were made from other inputs or settings."""
    key = "inputs" if items and items[0].inputs is not None else "prompt"
    for index, (line, record) in sorted(journal.done.items()):
        where = f"{journal.path}:{line}"
        if index >= len(items):
            raise OAError(f"{where}: input {index} does not exist (the input has {len(items)} records)",
                          hint="this output was made from other input; choose another output path")
        if record.get("settings") != settings:
            differ = sorted(k for k in {*settings, *(record.get("settings") or {})}
                            if (record.get("settings") or {}).get(k) != settings.get(k))
            raise OAError(f"{where}: made with other settings ({', '.join(differ)} differ)",
                          hint="use the same settings to continue it, or choose another output path")
        expected = _json(dict(items[index].inputs) if key == "inputs" else items[index].prompt)
        if record.get(key) != expected:
            raise OAError(f"{where}: input {index} has changed since this output was written ({key} differs)",
                          hint="this output was made from other input; choose another output path")


def completion_dict(c: Completion) -> dict[str, Any]:
    out = {"text": c.text, "finish_reason": c.finish_reason, "num_tokens": c.tokens}
    if c.logprobs is not None:
        out["logprobs"] = c.logprobs
    return out


def _progress(total: int, done: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="rec", dynamic_ncols=True, mininterval=0.5,
                disable=None if enabled is None else not enabled)


def generate_into(engine: Any, items: Sequence[Item], params: GenerationParams, output: str | Path,
                  settings: dict[str, Any], *, chunk_size: int = 64, progress: bool | None = None) -> Summary:
    """Generate the records of ``items`` that ``output`` does not have yet, ``chunk_size`` at a time in input
    order, each chunk appended durably."""

    def rows_for(chunk: Sequence[Item]) -> tuple[list[dict], int]:
        rows, tokens = [], 0
        for it, completions in zip(chunk, engine.generate([it.prompt for it in chunk], params), strict=True):
            row = {"index": it.index, "id": it.id, "source": it.source, "prompt": it.prompt}
            if it.reference is not None:
                row["reference"] = it.reference
            rows.append(row | {"completions": [completion_dict(c) for c in completions], "settings": settings})
            tokens += sum(c.tokens for c in completions)
        return rows, tokens

    return _fill(output, items, settings, rows_for, chunk_size=chunk_size, progress=progress)


def score_into(model: Any, tokenizer: Any, items: Sequence[Item], output: str | Path, settings: dict[str, Any], *,
               batch_size: int = 8, chunk_size: int = 64, progress: bool | None = None) -> Summary:
    """Score the records of ``items`` that ``output`` does not have yet (see :func:`oa_infer.scoring.score`)."""
    from oa_infer.scoring import score

    def rows_for(chunk: Sequence[Item]) -> tuple[list[dict], int]:
        scores = iter(score(model, tokenizer, [seq for it in chunk for _, seq in it.inputs], batch_size))
        return [{"index": it.index, "id": it.id, "source": it.source, "inputs": dict(it.inputs),
                 "scores": {name: next(scores).to_dict() for name, _ in it.inputs}, "settings": settings}
                for it in chunk], 0

    return _fill(output, items, settings, rows_for, chunk_size=chunk_size, progress=progress)


def _fill(output: str | Path, items: Sequence[Item], settings: dict[str, Any], rows_for, *, chunk_size: int,
          progress: bool | None) -> Summary:
    """Append to ``output`` the rows ``rows_for(chunk) -> (rows, tokens)`` makes of the items it does not have
    yet, ``chunk_size`` items at a time in input order, each chunk durably, behind a progress bar (tokens/s when
    there are tokens)."""
    start = time.perf_counter()
    tokens = new = 0
    with Journal(output) as journal:
        check_resumable(journal, items, settings)
        earlier = len(journal.done)
        todo = [it for it in items if it.index not in journal.done]
        with _progress(len(items), earlier, Path(output).name, progress) as bar:
            for at in range(0, len(todo), chunk_size):
                rows, made = rows_for(todo[at : at + chunk_size])
                journal.append(rows)
                new, tokens = new + len(rows), tokens + made
                bar.update(len(rows))
                if tokens:
                    bar.set_postfix_str(f"{tokens / max(time.perf_counter() - start, 1e-9):,.0f} tok/s")
        return Summary(Path(output), len(journal.done), new, earlier, tokens, time.perf_counter() - start)


def run_settings(config: InferConfig, settings: Any, spec: GenerationParams | None = None) -> dict[str, Any]:
    """What an output records as its settings: task, generator, model, adapter and the generation parameters."""
    values = settings if isinstance(settings, dict) else settings.model_dump()  # a generator without options: a dict
    out: dict[str, Any] = {"task": config.task, "model": values.get("model"), "adapter": values.get("adapter")}
    if config.task == "generate":
        out["generator"] = config.generator
        out |= spec.model_dump(mode="json")
    return _json(out)


def run_infer(config: InferConfig, *, engine: Any = None, registry: Any = None,
              progress: bool | None = None) -> list[Summary]:
    """Run ``config``: one output per generation setting (or the scores). ``engine``: an engine already made
    (else the generator loads one from ``config.engine``). Inputs and existing outputs are checked before any
    model is loaded."""
    from oa_core.io import refuse_input_as_output
    from oa_core.plugins import get_registry

    registry = registry or get_registry()
    settings = engine_settings(config, registry)
    outputs = config.outputs()
    for _, path in outputs:
        refuse_input_as_output(path, {"input.path": config.input.path})
    items = load_items(config.input, config.task, progress=progress)
    finished = []
    for spec, path in outputs:
        if path.exists():
            with Journal(path) as journal:
                check_resumable(journal, items, run_settings(config, settings, spec))
                finished.append(len(journal.done) == len(items))
    if len(finished) == len(outputs) and all(finished):  # nothing to do: no model is loaded
        return [Summary(path, len(items), 0, len(items)) for _, path in outputs]
    if config.task == "score":
        from oa_infer.loader import load_pretrained

        model, tokenizer = load_pretrained(settings, seq_cls=True, attn_implementation=settings.attn_implementation,
                                           device=settings.device)
        return [score_into(model, tokenizer, items, outputs[0][1], run_settings(config, settings),
                           batch_size=settings.batch_size, chunk_size=config.chunk_size, progress=progress)]
    if engine is None:
        engine = registry.get("generator", config.generator).load(settings)
    return [generate_into(engine, items, GenerationParams(**spec.model_dump(exclude={"name"})), path,
                          run_settings(config, settings, spec), chunk_size=config.chunk_size, progress=progress)
            for spec, path in outputs]
