"""``oa eval``: score checkpoints on datasets and pick the best one.

For every checkpoint (a model folder, an adapter on its base, or each checkpoint of a run) and every dataset,
the answers are generated with the ``hf`` engine into resumable ``oa infer`` outputs
(``<output_dir>/<checkpoint>/<dataset>.generations.jsonl``, and ``.samples.jsonl`` for pass@k), scored with
:mod:`oa_infer.metrics`, by a reward model (:func:`oa_infer.scoring.score`) and by the model's perplexity of the
reference answers; ``<checkpoint>/report.json`` holds its metrics, ``<dataset>.records.jsonl`` every record's
scores, and ``<output_dir>/report.json`` all checkpoints with the best one by ``select``. A checkpoint whose
report was made with the same settings is not evaluated again; a killed run continues its generations.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oa_core.errors import ConfigError, OAError, RecordError
from oa_core.generation import GenerationParams, Prompt
from oa_infer.eval_config import EvalConfig, EvalDataset, PassAtK, engine_settings
from oa_infer.infer import Item
from oa_infer.metrics import TEXT_METRICS

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One model to evaluate: ``model`` (a folder or hub id) with ``adapter`` on it, named ``name`` in reports
    (also its folder under ``output_dir``); ``step`` for a run's checkpoint-N."""

    name: str
    model: str
    adapter: str | None = None
    step: int | None = None

    @property
    def path(self) -> str:
        return self.adapter or self.model


# ---------------------------------------------------------------------------------------------- checkpoints


def find_checkpoints(config: EvalConfig, source: str | None = None) -> list[Checkpoint]:
    """The checkpoints ``config.models`` names, in order: a run's output_dir gives its
    ``checkpoints/checkpoint-*`` by step, then its ``model``. Problems are one line each, all of them at once,
    naming the ``models`` entry (after ``source``, the config file, when given; ``--model`` for flags)."""
    found: list[tuple[str, Checkpoint]] = []
    problems: list[OAError] = []
    for i, entry in enumerate(config.models):
        key = (f"--model {entry}" if source == "--model" else f"{source}: models.{i}" if source else f"models.{i}")
        try:
            found += _entry_checkpoints(config, entry, key)
        except OAError as e:
            problems.append(e)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigError([str(e) for e in problems])
    names = _unique([name for name, _ in found], [c.path for _, c in found])
    return [Checkpoint(name, c.model, c.adapter, c.step) for name, (_, c) in zip(names, found, strict=True)]


def _entry_checkpoints(config: EvalConfig, entry: str, key: str) -> list[tuple[str, Checkpoint]]:
    found: list[tuple[str, Checkpoint]] = []
    folder = Path(entry).expanduser()
    if folder.is_dir() and not _loadable(folder) and ((folder / "checkpoints").is_dir() or (folder / "model").is_dir()):
        steps = sorted((int(m.group(1)), p) for p in (folder / "checkpoints").glob("checkpoint-*")
                       if p.is_dir() and (m := CHECKPOINT.match(p.name)))
        members = [(step, p) for step, p in steps] + ([(None, folder / "model")] if (folder / "model").is_dir() else [])
        if not members:
            raise OAError(f"{key}: the run '{entry}' has no checkpoints and no model yet",
                          hint="evaluate it once it has saved a checkpoint")
        for step, path in members:
            found.append((f"{folder.name}/{path.name}", _checkpoint(str(path), key, config, step)))
    else:
        found.append((folder.name or entry, _checkpoint(entry, key, config, None)))
    return found


def _loadable(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _checkpoint(path: str, key: str, config: EvalConfig, step: int | None) -> Checkpoint:
    from oa_data.hub import resolve_source
    from oa_infer.adapters import read_adapter

    folder = Path(path).expanduser()
    resolve_source(path, key)  # a one-line error for a local folder that is not there
    if not folder.is_dir():
        return Checkpoint(path, path, step=step)  # a hub id
    if (folder / "adapter_config.json").is_file():
        info = read_adapter(path, key)
        base = config.base or info.base
        if not base:
            raise OAError(f"{key}: the adapter in '{path}' does not name its base model", hint="set `base: PATH`")
        return Checkpoint(path, base, path, step)
    if not (folder / "config.json").is_file():
        raise OAError(f"{key}: '{path}' holds no model (config.json) or adapter (adapter_config.json)",
                      hint="a checkpoint of a sharded run (FSDP, ZeRO-3) has only training state: evaluate the run's "
                      "model folder")
    return Checkpoint(path, path, step=step)


def _unique(names: list[str], paths: list[str]) -> list[str]:
    """``names`` made distinct: a name two checkpoints share gets its parent folder, then a number."""
    out = list(names)
    for i, name in enumerate(names):
        if names.count(name) > 1:
            parent = Path(paths[i]).expanduser().resolve().parent.name
            out[i] = f"{parent}/{name}" if parent and not name.startswith(parent + "/") else name
    for i, name in enumerate(list(out)):
        if out.count(name) > 1:
            out[i] = f"{name}-{out[:i + 1].count(name)}"
    return [re.sub(r"[^A-Za-z0-9_./-]", "_", n).strip("/") or "model" for n in out]


# ---------------------------------------------------------------------------------------------- datasets


ANSWERED = "a record with a reference answer (e.g. prompt_reference, a conversation ending in an assistant turn)"


def load_dataset(spec: EvalDataset, *, progress: bool | None = None) -> list[Item]:
    """The records of ``spec`` with their prompts and references; a one-line error naming the record when a
    metric needs what a record lacks. Checked before any model is loaded."""
    from oa_core.schema import Conversation, PromptCompletion, PromptWithReference, Text
    from oa_infer.infer import load_items

    items = load_items(spec, "generate", progress=progress)
    need_reference = [m for m in spec.metrics if m in TEXT_METRICS or m == "pass_at_k"]
    for it in items:
        if need_reference and not it.reference:
            raise RecordError(f"{spec.label}: {it.source}: no reference answer to compare with "
                              f"({', '.join(need_reference)})", hint=f"these metrics need {ANSWERED}")
        if "perplexity" in spec.metrics and not isinstance(it.record, Conversation | PromptCompletion |
                                                               PromptWithReference | Text):
            raise RecordError(f"{spec.label}: {it.source}: a {type(it.record).__name__} record has no answer to "
                              "measure the perplexity of", hint=f"perplexity needs {ANSWERED}, or text")
    return items


# ---------------------------------------------------------------------------------------------- metrics


def reward_scores(model: Any, tokenizer: Any, prompts: Sequence[Prompt], answers: Sequence[str], *,
                  batch_size: int = 8) -> list[float]:
    """A reward model's score of every answer after its prompt (a conversation gets the answer as the
    assistant's turn, a text the answer appended), through :func:`oa_infer.scoring.score`."""
    from oa_infer.scoring import score

    sequences = [p + [{"role": "assistant", "content": a}] if isinstance(p, list) else p + a
                 for p, a in zip(prompts, answers, strict=True)]
    scores = score(model, tokenizer, sequences, batch_size)
    if scores and scores[0].score is None:
        raise OAError("reward.model: a classifier with several labels, not a reward model (one score)",
                      hint="use a reward model (num_labels 1), e.g. one trained with `method: rm`")
    return [s.score for s in scores]


def answer_examples(items: Sequence[Item], tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` of every record as SFT training encodes it (oa-data's tokenization and loss
    masks with the tokenizer's saved chat template, default mask policy: the assistant turns; a prompt with a
    reference as a prompt plus the reference as the answer; a text with every token)."""
    from oa_core.schema import PromptCompletion, PromptWithReference, Text
    from oa_data.settings import DataSettings
    from oa_data.tokenize import encode_record
    from oa_infer.prompting import chat_template

    settings = DataSettings()
    template = None
    out = []
    for it in items:
        record = it.record
        if isinstance(record, PromptWithReference):
            record = PromptCompletion(prompt=record.prompt, completion=record.reference)
        if template is None and not isinstance(record, Text):
            template = chat_template(tokenizer, where="model")
        encoded = encode_record(record, tokenizer, template, settings, source=it.source)
        out.append((encoded.input_ids, encoded.labels))
    return out


def check_reward_model(config: EvalConfig, source: str | None = None) -> None:
    """A one-line error naming ``reward.model`` (or ``reward.adapter``) unless it is a reward model or classifier:
    read from its config, before any model is loaded."""
    from oa_infer.loader import check_classifier, check_classifier_adapter

    prefix = "--reward-model " if source == "--model" else f"{source}: reward." if source else "reward."
    try:
        if config.reward.adapter:
            check_classifier_adapter(config.reward.adapter)
        else:
            check_classifier(config.reward)
    except OAError as e:
        message = e.message.removeprefix("model: ") if source == "--model" else e.message
        raise OAError(prefix + message, e.hint) from None


def check_answer_encoding(config: EvalConfig, checkpoints: Sequence[Checkpoint],
                          data: Sequence[tuple[EvalDataset, Sequence[Item]]]) -> None:
    """Encode the answers of the datasets measured by perplexity with every checkpoint's tokenizer (each distinct
    one once), so a template that cannot mark the answers is a one-line error before any model is loaded."""
    from oa_infer.loader import load_inference_tokenizer, tokenizer_path

    measured = [items for spec, items in data if "perplexity" in spec.metrics]
    if not measured:
        return
    seen: set[str] = set()
    for ckpt in checkpoints:
        settings = engine_settings(config, ckpt.model, ckpt.adapter)
        path = tokenizer_path(settings)
        if path in seen:
            continue
        seen.add(path)
        tokenizer = load_inference_tokenizer(settings)
        for items in measured:
            answer_examples(items, tokenizer)


def reference_nll(model: Any, tokenizer: Any, items: Sequence[Item], *, batch_size: int = 8,
                  progress: bool | None = None) -> list[tuple[float, int]]:
    """``(summed negative log-likelihood, supervised tokens)`` of every record's answer tokens under ``model``
    (:func:`answer_examples`: the tokens training's loss is computed on), sorted into batches by length."""
    from tqdm.auto import tqdm

    from oa_infer.engines import eos_token_ids, pad_token_id
    from oa_infer.engines.hf import label_logprobs

    rows = answer_examples(items, tokenizer)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    for it, (ids, _) in zip(items, rows, strict=True):
        if limit and len(ids) > limit:
            raise RecordError(f"{it.source}: {len(ids)} tokens, the model takes {limit} (perplexity)",
                              hint="use shorter records or leave perplexity out for this dataset")
    pad = pad_token_id(tokenizer, eos_token_ids(model, tokenizer))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    with tqdm(total=len(rows), desc="perplexity", unit="rec", dynamic_ncols=True, mininterval=0.5,
              disable=None if progress is None else not progress) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            for i, logps in zip(idx, label_logprobs(model, [rows[i] for i in idx], batch_size=len(idx), pad_id=pad),
                                strict=True):
                out[i] = (-sum(logps), len(logps))
            bar.update(len(idx))
    return out


def perplexity(nll: Sequence[tuple[float, int]]) -> float:
    """exp of the mean negative log-likelihood per answer token over all records (inf when it overflows)."""
    total, tokens = sum(n for n, _ in nll), sum(t for _, t in nll)
    if not tokens:
        return float("nan")
    try:
        return math.exp(total / tokens)
    except OverflowError:
        return float("inf")


# ---------------------------------------------------------------------------------------------- one checkpoint


def weights_fingerprint(path: str | None) -> str | None:
    """A short hash of the names, sizes and modification times of a local model or adapter folder's files (so a
    folder trained again is evaluated again); None for a hub id or no path."""
    import hashlib

    if path is None or not Path(path).expanduser().is_dir():
        return None
    files = sorted(p for p in Path(path).expanduser().iterdir() if p.is_file())
    listing = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def checkpoint_settings(config: EvalConfig, ckpt: Checkpoint) -> dict[str, Any]:
    """What a checkpoint's report was made with (a report with other settings is made again): the config's
    settings and the fingerprints of the checkpoint's files."""
    return json.loads(json.dumps({
        "model": ckpt.model, "adapter": ckpt.adapter, "weights": _weights(ckpt), "engine": config.engine,
        "datasets": [d.model_dump(mode="json") for d in config.datasets],
        "generation": config.generation.model_dump(mode="json"),
        "reward": config.reward.model_dump(mode="json") if config.reward else None, "seed": config.seed,
    }))


def _weights(ckpt: Checkpoint) -> dict[str, str | None]:
    return {"model": weights_fingerprint(ckpt.model), "adapter": weights_fingerprint(ckpt.adapter)}


def _params(config: EvalConfig, spec: EvalDataset, sampled: PassAtK | None = None) -> GenerationParams:
    params = spec.generation or config.generation
    if sampled is not None:
        params = params.model_copy(update={"n": sampled.n, "temperature": sampled.temperature,
                                           "top_p": sampled.top_p})
    if params.seed is None and params.temperature > 0:
        params = params.model_copy(update={"seed": config.seed})
    return params


def _generations(engine: Any, ckpt: Checkpoint, items: Sequence[Item], params: GenerationParams, path: Path,
                 config: EvalConfig, progress: bool | None) -> list[dict[str, Any]]:
    """The answers of ``items`` (an ``oa infer`` output at ``path``, resumed when it exists), in input order."""
    from oa_core.journal import Journal
    from oa_infer.infer import check_resumable, generate_into

    settings = json.loads(json.dumps({"task": "generate", "model": ckpt.model, "adapter": ckpt.adapter,
                                      "weights": _weights(ckpt), "generator": "hf", **params.model_dump(mode="json")}))
    if path.exists():  # answers of an earlier evaluation with other settings, inputs or weights: made again
        try:
            with Journal(path) as journal:
                check_resumable(journal, items, settings)
        except OAError:
            path.unlink()
    generate_into(engine, items, params, path, settings, chunk_size=config.chunk_size, progress=progress)
    with Journal(path) as journal:
        return [journal.done[it.index][1] for it in items]


def evaluate_dataset(engine: Any, ckpt: Checkpoint, spec: EvalDataset, items: Sequence[Item], folder: Path,
                     config: EvalConfig, *, reward_model: Any = None, progress: bool | None = None) -> dict[str, Any]:
    """The metrics of one checkpoint on one dataset; writes its generations and ``<dataset>.records.jsonl``."""
    from oa_core.io import atomic_write_text
    from oa_infer.metrics import answer_scores, pass_at_k_scores

    name = spec.label
    per: list[dict[str, Any]] = [{"index": it.index, "source": it.source} for it in items]
    result: dict[str, Any] = {"records": len(items)}
    if "perplexity" in spec.metrics:
        nll = reference_nll(engine.model, engine.tokenizer, items, batch_size=engine.batch_size, progress=progress)
        result["perplexity"] = perplexity(nll)
        result["answer_tokens"] = sum(t for _, t in nll)
        for row, (n, t) in zip(per, nll, strict=True):
            row |= {"nll": n, "answer_tokens": t}
    if any(m in TEXT_METRICS or m == "reward" for m in spec.metrics):
        rows = _generations(engine, ckpt, items, _params(config, spec), folder / f"{name}.generations.jsonl",
                            config, progress)
        answers = [r["completions"][0]["text"] for r in rows]
        asked = [m for m in spec.metrics if m in TEXT_METRICS]
        if asked:
            scores, flags = answer_scores(answers, [it.reference for it in items], asked)
            result |= scores
            for row, flag in zip(per, flags, strict=True):
                row |= flag
        if "reward" in spec.metrics:
            model, tokenizer = reward_model
            rewards = reward_scores(model, tokenizer, [it.prompt for it in items], answers,
                                    batch_size=config.reward.batch_size)
            result["reward"] = sum(rewards) / len(rewards)
            for row, value in zip(per, rewards, strict=True):
                row["reward"] = value
    if "pass_at_k" in spec.metrics:
        sampling = spec.pass_at_k or PassAtK()
        rows = _generations(engine, ckpt, items, _params(config, spec, sampling), folder / f"{name}.samples.jsonl",
                            config, progress)
        samples = [[c["text"] for c in r["completions"]] for r in rows]
        scores, counts = pass_at_k_scores(samples, [it.reference for it in items], sampling.k,
                                          correct=sampling.correct)
        result |= scores
        for row, c in zip(per, counts, strict=True):
            row["correct_samples"] = c
    atomic_write_text(folder / f"{name}.records.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per))
    return result


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class EvalResult:
    """The combined report: one row per checkpoint, the best one when ``select`` is set."""

    rows: list[dict[str, Any]]
    metrics: list[str]
    best: dict[str, Any] | None
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "checkpoints": self.rows, "best": self.best}


def run_eval(config: EvalConfig, *, progress: bool | None = None, console: Any = None,
             source: str | None = None) -> EvalResult:
    """Evaluate every checkpoint of ``config`` (see the module docstring). Checkpoints and datasets are checked
    before any model is loaded; ``source`` (the config file, or ``--model`` for flags) starts the lines of
    problems with checkpoints."""
    from oa_core.io import atomic_write_text
    from oa_infer.engines.hf import HFEngine
    from oa_infer.loader import load_pretrained, tokenizer_path

    out_dir = Path(config.output_dir)
    checkpoints = find_checkpoints(config, source)
    data = [(spec, load_dataset(spec, progress=progress)) for spec in config.datasets]
    check_answer_encoding(config, checkpoints, data)
    if config.reward is not None:
        check_reward_model(config, source)
    say = console.print if console is not None else (lambda *a, **k: None)
    reward_model = None
    rows = []
    for number, ckpt in enumerate(checkpoints, start=1):
        folder = out_dir / ckpt.name
        report_path = folder / "report.json"
        settings = checkpoint_settings(config, ckpt)
        earlier = _read_report(report_path)
        if earlier is not None and earlier.get("settings") == settings:
            say(f"[{number}/{len(checkpoints)}] {ckpt.name}: evaluated before with the same settings ({report_path})")
            rows.append(_row(ckpt, earlier["datasets"], report_path))
            continue
        say(f"[{number}/{len(checkpoints)}] {ckpt.name}: {ckpt.path}")
        start = time.perf_counter()
        hf = engine_settings(config, ckpt.model, ckpt.adapter)
        model, tokenizer = load_pretrained(hf, attn_implementation=hf.attn_implementation, device=hf.device)
        engine = HFEngine.from_settings(model, tokenizer, hf, source=f"the tokenizer in '{tokenizer_path(hf)}'")
        if reward_model is None and any("reward" in spec.metrics for spec in config.datasets):
            reward_model = load_pretrained(config.reward, seq_cls=True, device=hf.device)
        results = {spec.label: evaluate_dataset(engine, ckpt, spec, items, folder, config, reward_model=reward_model,
                                                progress=progress) for spec, items in data}
        report = {"checkpoint": ckpt.name, "model": ckpt.model, "adapter": ckpt.adapter, "step": ckpt.step,
                  "datasets": results, "seconds": round(time.perf_counter() - start, 3), "settings": settings}
        atomic_write_text(report_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        rows.append(_row(ckpt, results, report_path))
        del engine, model
        _free_memory()
    metrics = config.metric_names()
    best = select_best(rows, *config.selected()) if config.select is not None else None
    result = EvalResult(rows, metrics, best, out_dir / "report.json")
    atomic_write_text(result.path, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return result


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _row(ckpt: Checkpoint, results: dict[str, dict[str, Any]], report: Path) -> dict[str, Any]:
    flat = {f"{name}/{key}": value for name, values in results.items() for key, value in values.items()
            if key not in ("records", "answer_tokens")}
    return {"checkpoint": ckpt.name, "path": ckpt.path, "model": ckpt.model, "adapter": ckpt.adapter,
            "step": ckpt.step, "report": str(report), "metrics": flat}


def select_best(rows: Sequence[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The row with the best finite value of ``metric`` (``max`` or ``min``; the earliest on ties), as
    ``{metric, mode, checkpoint, path, value}``; None when no row has a finite value."""
    scored = [(r["metrics"].get(metric), k, r) for k, r in enumerate(rows)]
    scored = [(v, k, r) for v, k, r in scored if isinstance(v, int | float) and math.isfinite(v)]
    if not scored:
        return None
    if mode == "max":
        value, _, row = max(scored, key=lambda t: (t[0], -t[1]))
    else:
        value, _, row = min(scored, key=lambda t: (t[0], t[1]))
    return {"metric": metric, "mode": mode, "checkpoint": row["checkpoint"], "path": row["path"], "value": value}


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- the console


def _number(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def table(result: EvalResult):
    """A rich table of every checkpoint's ``DATASET/METRIC`` values, the best checkpoint marked ``*``: one row per
    checkpoint, or one row per metric when there are more metrics than checkpoints (fewer columns to squeeze)."""
    from rich.table import Table

    best = result.best["checkpoint"] if result.best else None
    title = f"oa eval: {len(result.rows)} checkpoint{'s' if len(result.rows) != 1 else ''}"
    out = Table(title=title, title_justify="left")
    names = [row["checkpoint"] + (" *" if row["checkpoint"] == best else "") for row in result.rows]
    if len(result.metrics) > len(result.rows):
        out.add_column("metric")
        for name in names:
            out.add_column(name, justify="right", style="bold" if name.endswith(" *") else None)
        for metric in result.metrics:
            out.add_row(metric, *(_number(row["metrics"].get(metric)) for row in result.rows))
        return out
    out.add_column("checkpoint")
    for metric in result.metrics:
        out.add_column(metric, justify="right")
    for name, row in zip(names, result.rows, strict=True):
        out.add_row(name, *(_number(row["metrics"].get(m)) for m in result.metrics),
                    style="bold" if name.endswith(" *") else None)
    return out


def best_line(result: EvalResult) -> str:
    """``best checkpoint by METRIC (max): PATH (VALUE)``, or why there is none; then where the report is."""
    if result.best is None:
        return f"report: {result.path}"
    b = result.best
    return (f"best checkpoint by {b['metric']} ({b['mode']}): {b['path']} ({_number(b['value'])}); "
            f"report: {result.path}")
