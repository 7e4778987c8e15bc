"""``oa augment``: an augmenter over the records of a dataset, resumable and crash-safe.

Every input record is one unit of work. Its new records go into a journal (:class:`oa_core.journal.Journal`, one
line per finished input, appended and fsynced before it counts) in ``<output>.augment/journal.jsonl``; a run that
is stopped at any moment, kill -9 included, continues with the same command and redoes only the records in flight.
Records are worked on concurrently, but each gets a seed derived from the run's seed, the augmenter and its id,
and the output is written from the journal in input order, so a run gives the same output whether it was
interrupted or not, and whatever the concurrency. The output (native ``oa.*`` rows) is written whole (atomically)
at the end of each run, after the filters and duplicate removal; ``summary.json`` accounts for every input.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oa_augment.config import AugmentConfig, InputSpec
from oa_augment.records import as_record, fingerprint, to_row
from oa_core.errors import OAError
from oa_core.generation import Completion, GenerationParams
from oa_core.journal import Journal

WHAT = "a journal of oa augment"
# engine settings that change how requests are made, not what they give: a run continues across changes of them
OPERATIONAL = {"base_url", "api_key_env", "timeout", "max_retries", "backoff", "backoff_max", "requests_per_minute",
               "max_concurrent_requests", "headers", "batch_size", "device"}


def derive_seed(*parts: Any) -> int:
    """A seed from ``parts`` (run seed, augmenter, record id, call number): the same in every run and process."""
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:15], 16)


@dataclass
class Item:
    """One input record."""

    index: int
    id: str
    source: str  # file:LINE
    record: Any
    key: str  # fingerprint of the record: a journal line must come from the same input


def load_inputs(spec: InputSpec, *, progress: bool | None = None) -> list[Item]:
    """The records of ``spec``, read through its dataset format (bad rows are one-line errors naming file, line
    and field)."""
    from oa_data.loading import load_input

    loaded, records = load_input(spec, purpose="to augment", progress=progress)
    return [Item(k, str(r.metadata.get("id", k)), loaded.where(k), r, fingerprint(to_row(r))) for k, r in enumerate(records)]


class _Serial:
    """An engine that is not safe to call from several threads: one call at a time."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._lock = threading.Lock()

    def generate(self, prompts, params):
        with self._lock:
            return self.engine.generate(prompts, params)


class DryRunEngine:
    """Answers every prompt with a stand-in (``--dry-run``): nothing is sent anywhere."""

    concurrent = True

    def generate(self, prompts, params):
        return [[Completion(f"<generated answer {k + 1}>", [], "stop") for k in range(params.n)] for _ in prompts]


@dataclass
class Runtime:
    """What every record's work shares."""

    config: AugmentConfig
    name: str
    augmenter: Any
    options: Any
    template: Any  # oa_augment.templates.Template or None
    params: GenerationParams
    settings: dict[str, Any]
    pool: list[Any]
    engine: Any = None
    scorer: Any = None

    @property
    def settings_hash(self) -> str:
        return fingerprint(self.settings)


class Context:
    """The :class:`oa_core.extensions.AugmentContext` of one input record."""

    def __init__(self, item: Item, run: Runtime):
        import random

        self.item, self.run = item, run
        self.index, self.id = item.index, item.id
        self.seed = derive_seed(run.config.seed, run.name, item.id)
        self.rng = random.Random(self.seed)
        self.options = run.options
        self.pool = run.pool
        self.reasons: list[str] = []
        self.calls: list[tuple[list[Any], GenerationParams, list[list[Completion]]]] = []
        self.prompt_tokens = self.completion_tokens = 0

    def generate(self, prompts: Sequence[Any], **params: Any) -> list[list[Completion]]:
        if self.run.engine is None:
            raise OAError(f"augmenter '{self.run.name}' generates text, and no generator is configured",
                          hint="set generator: and engine:")
        prompts = list(prompts)
        values = self.run.params.model_dump() | params | {"seed": derive_seed(self.seed, len(self.calls))}
        p = GenerationParams.model_validate(values)
        out = self.run.engine.generate(prompts, p)
        if len(out) != len(prompts) or any(len(c) != p.n for c in out):
            raise OAError(f"generator '{self.run.config.generator}' returned {len(out)} results for {len(prompts)} "
                          f"prompts (n={p.n})", hint="a bug in the generator")
        self.calls.append((prompts, p, out))
        for completions in out:
            self.prompt_tokens += completions[0].prompt_tokens or 0 if completions else 0
            self.completion_tokens += sum(c.tokens for c in completions)
        return out

    def render(self, **variables: Any) -> str:
        if self.run.template is None:
            raise OAError(f"augmenter '{self.run.name}' has no prompt template", hint="give template: in the config")
        return self.run.template.render(**variables)

    def score(self, prompt: Any, completions: Sequence[str]) -> list[float | None]:
        if self.run.scorer is None:
            raise OAError(f"augmenter '{self.run.name}' scores completions, and no reward is configured",
                          hint="set reward.function or reward.model")
        return self.run.scorer(prompt, list(completions), self.item.record)

    def drop(self, reason: str) -> None:
        self.reasons.append(reason)

    def provenance(self) -> dict[str, Any]:
        s = self.run.settings
        return {"augmenter": s["augmenter"], "version": s["version"], "options": s["options"],
                "template": fingerprint(s["template"]) if s["template"] is not None else None,
                "generator": s["generator"], "model": s["model"], "params": s["generation"], "seed": self.seed,
                "source": {"id": self.item.id, "index": self.item.index, "where": self.item.source}}


def process(item: Item, run: Runtime) -> tuple[dict[str, Any], Context]:
    """The journal line of one input record: its new records (with provenance), what was dropped, tokens."""
    ctx = Context(item, run)
    rows = []
    for k, made in enumerate(run.augmenter.augment(item.record, ctx) or ()):
        record = as_record(made, where=f"augmenter '{run.name}', record {k} made from {item.source}")
        row = to_row(record)
        row.setdefault("metadata", {})["augment"] = ctx.provenance()
        rows.append(row)
    line = {"index": item.index, "id": item.id, "source": item.source, "input": item.key, "run": run.settings_hash,
            "records": rows, "dropped": ctx.reasons, "calls": len(ctx.calls),
            "tokens": {"prompt": ctx.prompt_tokens, "completion": ctx.completion_tokens}}
    return line, ctx


# ---------------------------------------------------------------- setting up


def prepare(config: AugmentConfig, registry: Any, *, engine: Any = None, load_engine: bool = True,
            pool: list[Any] | None = None) -> Runtime:
    """The run's shared state; the engine is loaded only when ``load_engine`` (and none is given)."""
    from oa_augment.config import _needs
    from oa_augment.templates import Template

    entry = registry.get("augmenter", config.augmenter)
    options = entry.options.model_validate(config.options) if entry.options is not None else dict(config.options)
    text = config.template if config.template is not None else entry.template
    template = Template(text, "template" if config.template is not None else f"augmenter '{config.augmenter}' "
                        "template") if text is not None else None
    engine_settings: Any = None
    if config.generator is not None:
        gen = registry.get("generator", config.generator)
        engine_settings = gen.options.model_validate(config.engine) if gen.options is not None else dict(config.engine)
        if engine is None and load_engine and _needs(entry.needs_generator, options):
            engine = gen.load(engine_settings)
    if engine is not None and not getattr(engine, "concurrent", False):
        engine = _Serial(engine)
    values = engine_settings.model_dump(mode="json") if hasattr(engine_settings, "model_dump") else dict(engine_settings or {})
    params = GenerationParams.model_validate(config.generation.model_dump())
    options_json = options.model_dump(mode="json") if hasattr(options, "model_dump") else json.loads(json.dumps(options))
    reward = config.reward.model_dump(mode="json", exclude={"batch_size", "device"}) if config.reward else None
    settings = {"augmenter": config.augmenter, "version": entry.version, "options": options_json, "template": text,
                "generator": config.generator, "model": values.get("model"),
                "engine": {k: v for k, v in values.items() if k not in OPERATIONAL and k != "model"},
                "generation": params.model_dump(mode="json", exclude={"seed"}), "seed": config.seed, "reward": reward}
    run = Runtime(config, config.augmenter, entry, options, template, params, settings, pool or [], engine)
    if config.reward is not None and _needs(entry.needs_reward, options):
        from oa_augment.scoring import make_scorer

        run.scorer = make_scorer(config.reward, registry)
    return run


# ---------------------------------------------------------------- the summary


@dataclass
class Summary:
    """What became of every input and record."""

    output: Path
    inputs: int
    done: int = 0
    filtered: int = 0
    failed: int = 0
    pending: int = 0
    earlier: int = 0
    new: int = 0
    filtered_reasons: Counter = field(default_factory=Counter)
    failed_reasons: Counter = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    made: int = 0
    removed: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)  # what the augmenter did not make, by its reason
    written: int = 0
    kinds: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    currency: str = ""
    seconds: float = 0.0
    retries: dict[str, int] = field(default_factory=dict)
    beyond: int = 0  # journalled inputs past this run's input (a lower limit): not in the output

    @property
    def complete(self) -> bool:
        return self.failed == 0 and self.pending == 0

    @property
    def format(self) -> str | None:
        return f"oa.{next(iter(self.kinds))}" if len(self.kinds) == 1 else None

    def lines(self) -> list[str]:
        def counts(c: Counter) -> str:
            return ", ".join(f"{k}: {v}" for k, v in c.most_common())

        earlier = f", {self.earlier} from an earlier run" if self.earlier else ""
        out = [f"{self.output}: {self.inputs} inputs: {self.done} done{earlier}"
               + (f", {self.filtered} filtered ({counts(self.filtered_reasons)})" if self.filtered else "")
               + (f", {self.failed} failed ({counts(self.failed_reasons)})" if self.failed else "")
               + (f", {self.pending} not attempted (the run stopped)" if self.pending else "")]
        out.append(f"  records: {self.made} made"
                   + (f" ({sum(self.dropped.values())} not made: {counts(self.dropped)})" if self.dropped else "")
                   + (f", {sum(self.removed.values())} removed ({counts(self.removed)})" if self.removed else "")
                   + f", {self.written} written")
        rate = f", {self.new / self.seconds:.2f} records/s" if self.new and self.seconds > 0 else ""
        cost = f", cost ≈ {self.cost:.4f} {self.currency}" if self.cost is not None else ""
        retries = f"; retries: {sum(self.retries.values())} ({counts(Counter(self.retries))})" if self.retries else ""
        out.append(f"  tokens: {self.prompt_tokens:,} prompt + {self.completion_tokens:,} generated{cost}; "
                   f"{self.new} inputs in {self.seconds:.1f} s this run{rate}{retries}")
        if self.beyond:
            out.append(f"  {self.beyond} journalled inputs lie beyond this run's input (input.limit) and are left out")
        if self.format:
            out.append(f"  train on it: datasets: [{{path: {self.output}, format: {self.format}}}]")
        elif self.kinds:
            out.append(f"  record kinds: {counts(self.kinds)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output), "complete": self.complete, "inputs": self.inputs, "done": self.done,
                "filtered": self.filtered, "failed": self.failed, "pending": self.pending, "earlier": self.earlier,
                "filtered_reasons": dict(self.filtered_reasons), "failed_reasons": dict(self.failed_reasons),
                "failures": self.failures, "records": {"made": self.made, "not_made": dict(self.dropped),
                                                       "removed": dict(self.removed), "written": self.written,
                                                       "kinds": dict(self.kinds), "format": self.format},
                "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
                "cost": self.cost, "currency": self.currency or None, "seconds": round(self.seconds, 3),
                "retries": self.retries}


# ---------------------------------------------------------------- the run


def run_augment(config: AugmentConfig, *, engine: Any = None, registry: Any = None,
                progress: bool | None = None) -> Summary:
    """Run ``config``: augment the inputs the journal does not have yet, then write the output and the summary.
    ``engine``: an engine already made (else the generator loads one, only when there is work left)."""
    from oa_core.io import refuse_input_as_output
    from oa_core.plugins import get_registry

    registry = registry or get_registry()
    start = time.perf_counter()
    refuse_input_as_output(config.output, {"input.path": config.input.path})
    work = config.journal_dir
    refuse_input_as_output(work, {"input.path": config.input.path})
    items = load_inputs(config.input, progress=progress)
    run = prepare(config, registry, engine=engine, load_engine=False, pool=[it.record for it in items])
    summary = Summary(Path(config.output), len(items))
    failures: dict[int, str] = {}
    with Journal(work / "journal.jsonl", what=WHAT) as journal:
        _check_settings(work, journal, run, items)
        summary.earlier = sum(1 for it in items if it.index in journal.done)
        todo = [it for it in items if it.index not in journal.done]
        if todo:
            if run.engine is None and config.generator is not None:
                run = prepare(config, registry, engine=engine, pool=run.pool)
            try:
                _execute(todo, run, journal, failures, summary, progress, len(items))
            finally:
                if engine is None and hasattr(getattr(run.engine, "engine", run.engine), "close"):
                    getattr(run.engine, "engine", run.engine).close()
        stats = getattr(getattr(run.engine, "engine", run.engine), "stats", None)
        if callable(stats):
            summary.retries = {k: v for k, v in stats().get("retries", {}).items() if v}
        summary.seconds = time.perf_counter() - start
        _write_output(config, items, journal, failures, summary)
    from oa_core.io import atomic_write_text

    atomic_write_text(work / "summary.json", json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n")
    return summary


def _check_settings(work: Path, journal: Journal, run: Runtime, items: list[Item]) -> None:
    """A one-line error when the journal was made with other settings or from other inputs; the settings are
    written (atomically) before the first line."""
    from oa_core.io import atomic_write_text

    path = work / "settings.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != json.loads(json.dumps(run.settings)):
            differ = sorted(k for k in {*old, *run.settings} if old.get(k) != run.settings.get(k))
            detail = []
            for k in differ:
                a, b = old.get(k), run.settings.get(k)
                if isinstance(a, dict) and isinstance(b, dict):
                    detail += [f"{k}.{s}" for s in sorted({*a, *b}) if a.get(s) != b.get(s)]
                else:
                    detail.append(k)
            raise OAError(f"{work}: this output was started with other settings ({', '.join(detail)} differ)",
                          hint=f"use the same settings to continue it, or move {work} away to start over")
    elif journal.done:
        raise OAError(f"{path}: missing beside a journal with {len(journal.done)} records",
                      hint=f"move {work} away to start over")
    else:
        atomic_write_text(path, json.dumps(run.settings, indent=2, ensure_ascii=False) + "\n")
    for index, (line, row) in sorted(journal.done.items()):
        where = f"{journal.path}:{line}"
        if row.get("run") != run.settings_hash:
            raise OAError(f"{where}: made with other settings than {path}", hint=f"move {work} away to start over")
        if index < len(items) and row.get("input") != items[index].key:
            raise OAError(f"{where}: input {index} ({items[index].source}) has changed since it was augmented",
                          hint=f"this output was made from other input; move {work} away to start over")


def _one_line(e: BaseException) -> str:
    text = e.message if isinstance(e, OAError) else str(e)
    return " ".join(text.split()) or type(e).__name__


def _reason_kind(message: str) -> str:
    """A failure message's kind, for counting (``HTTP 500 after 6 attempts``, ``timeout after 6 attempts``)."""
    import re

    m = re.search(r"((?:HTTP \d+|timeout|connection error|malformed response)(?: after \d+ attempts)?)", message)
    return m.group(1) if m else message.split(":")[0][:60]


def _execute(todo: list[Item], run: Runtime, journal: Journal, failures: dict[int, str], summary: Summary,
             progress: bool | None, total: int) -> None:
    from tqdm.auto import tqdm

    config = run.config
    cost = config.cost
    limit = config.max_failures
    stop = False
    it = iter(todo)
    pending: dict[Any, Item] = {}
    tokens = [0, 0]
    started = time.perf_counter()
    bar = tqdm(total=total, initial=total - len(todo), desc=Path(config.output).name, unit="rec", dynamic_ncols=True,
               mininterval=0.5, disable=None if progress is None else not progress)
    pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="oa-augment")
    try:
        def submit() -> None:
            while not stop and len(pending) < 2 * config.concurrency:
                item = next(it, None)
                if item is None:
                    return
                pending[pool.submit(process, item, run)] = item

        submit()
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            lines = []
            for future in sorted(finished, key=lambda f: pending[f].index):
                item = pending.pop(future)
                try:
                    line, ctx = future.result()
                except OAError as e:
                    failures[item.index] = _one_line(e)
                    continue
                except Exception as e:
                    raise OAError(f"augmenter '{run.name}' failed on {item.source}: {type(e).__name__}: {_one_line(e)}",
                                  hint="a bug in the augmenter or the generator; --debug shows the traceback") from e
                lines.append(line)
                tokens[0] += line["tokens"]["prompt"]
                tokens[1] += line["tokens"]["completion"]
            if lines:
                journal.append(lines)  # durable before it counts
                summary.new += len(lines)
            bar.update(len(finished))
            elapsed = max(time.perf_counter() - started, 1e-9)
            post = f"{(summary.new + len(failures)) / elapsed:.1f} rec/s, {tokens[1]:,} tok"
            if cost is not None:
                post += f", ≈{(tokens[0] * cost.prompt_per_million + tokens[1] * cost.completion_per_million) / 1e6:.4f} {cost.currency}"
            if failures:
                post += f", {len(failures)} failed"
            bar.set_postfix_str(post, refresh=False)
            if limit and len(failures) >= limit and not stop:
                stop = True
                bar.write(f"stopping: {len(failures)} records failed (max_failures), the last: "
                          f"{failures[max(failures)]}")
            submit()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)


def _write_output(config: AugmentConfig, items: list[Item], journal: Journal, failures: dict[int, str],
                  summary: Summary) -> None:
    """The output from the journal, in input order, through the filters and duplicate removal (atomically)."""
    from oa_augment.filters import Dedup, RecordFilter
    from oa_core.io import atomic_open

    record_filter, dedup = RecordFilter(config.filters), Dedup(config.dedup)
    if config.dedup.against_input:
        dedup.add_inputs(it.record for it in items)
    summary.beyond = sum(1 for index in journal.done if index >= len(items))
    with atomic_open(config.output) as f:
        for item in items:
            if item.index not in journal.done:
                if item.index in failures:
                    summary.failed += 1
                    summary.failed_reasons[_reason_kind(failures[item.index])] += 1
                    if len(summary.failures) < 100:
                        summary.failures.append({"index": item.index, "id": item.id, "source": item.source,
                                                 "reason": failures[item.index]})
                else:
                    summary.pending += 1
                continue
            line = journal.done[item.index][1]
            summary.made += len(line["records"])
            summary.dropped.update(line.get("dropped") or [])
            summary.prompt_tokens += line["tokens"]["prompt"]
            summary.completion_tokens += line["tokens"]["completion"]
            written, removed = 0, []
            for row in line["records"]:
                reason = record_filter.check(row) or dedup.check(row)
                if reason:
                    summary.removed[reason] += 1
                    removed.append(reason)
                    continue
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                summary.kinds[row["kind"]] += 1
                written += 1
            summary.written += written
            if written:
                summary.done += 1
            else:
                summary.filtered += 1
                reasons = line.get("dropped") or ([f"removed: {r}" for r in dict.fromkeys(removed)] or ["nothing made"])
                summary.filtered_reasons[reasons[0]] += 1
    if config.cost is not None:
        c = config.cost
        summary.cost = (summary.prompt_tokens * c.prompt_per_million + summary.completion_tokens * c.completion_per_million) / 1e6
        summary.currency = c.currency


# ---------------------------------------------------------------- preview


def preview(config: AugmentConfig, count: int = 3, *, registry: Any = None) -> str:
    """The prompts the augmenter would send for the first ``count`` records and the records it would write, with a
    stand-in generator (nothing is sent, nothing is written)."""
    from oa_core.plugins import get_registry

    registry = registry or get_registry()
    items = load_inputs(config.input, progress=False)
    run = prepare(config, registry, engine=DryRunEngine(), pool=[it.record for it in items])
    if config.reward is not None and run.scorer is not None and config.reward.model is not None:
        run.scorer = lambda prompt, completions, record: [0.0] * len(completions)
    out = [f"dry run of augmenter '{config.augmenter}' on {min(count, len(items))} of {len(items)} records: "
           "prompts as they would be sent; the generator's answers are stand-ins (reward models score 0), so "
           "augmenters that parse answers may make nothing here"]
    for item in items[:count]:
        out.append(f"\n── record {item.index} ({item.source}, seed {Context(item, run).seed}) " + "─" * 20)
        try:
            line, ctx = process(item, run)
        except OAError as e:
            out.append(f"  fails: {_one_line(e)}")
            continue
        for k, (prompts, params, _) in enumerate(ctx.calls, start=1):
            for j, prompt in enumerate(prompts, start=1):
                out.append(f"  call {k}, prompt {j} (n={params.n}, max_new_tokens={params.max_new_tokens}, "
                           f"temperature={params.temperature}, seed={params.seed}):")
                out += ["    " + x for x in _show_prompt(prompt).splitlines()]
        for row in line["records"]:
            shown = {k: v for k, v in row.items() if k != "metadata"}
            out.append("  would write: " + json.dumps(shown, ensure_ascii=False)[:600])
        if line["dropped"]:
            out.append(f"  not made: {', '.join(line['dropped'])}")
    return "\n".join(out)


def _show_prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"[{m['role']}] {m['content']}" for m in prompt)


__all__ = ["Context", "Item", "Summary", "derive_seed", "load_inputs", "preview", "run_augment"]
