"""Run config -> tokenized (and packed) datasets, with a report of everything that happened to the data.

Recipe: load every source through its format -> mix -> render + tokenize + mask -> truncate per
dataset -> (PoSE positions) -> check supervision -> (pack) -> cache. The result is keyed by a content
hash of data files, tokenizer files, template text and options, so a second run loads it from disk.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from oa_core.config import DatasetSpec, RunConfig
from oa_core.errors import OAError, RecordError
from oa_data.loading import LoadedSource, data_files, load_records
from oa_data.mixing import MixReport, mix
from oa_data.settings import DataSettings, default_truncation, truncation_problem
from oa_data.summary import DatasetSummary, check_losses
from oa_data.tokenize import Encoded, SupervisionReport, encode_record, encode_records, reencoder
from oa_data.tokenizer import RunTokenizer
from oa_data.truncation import TruncationReport, fit, is_text

COLUMNS = ("input_ids", "labels", "position_ids")


@dataclass
class SplitReport:
    """What happened to one split: the realised mix, truncation per source, supervision, packing."""

    split: str
    mix: MixReport
    truncation: dict[str, TruncationReport] = field(default_factory=dict)
    supervision: SupervisionReport = field(default_factory=SupervisionReport)
    samples: int = 0
    rows: int = 0
    tokens: int = 0
    packing_efficiency: float | None = None
    produced: dict[str, list[int]] = field(default_factory=dict)  # source -> [samples, tokens, supervised tokens]
    datasets: list[DatasetSummary] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"[{self.split}] mix (seed {self.mix.seed}, epoch {self.mix.epoch}):", *("  " + x for x in self.mix.lines())]
        out += [f"  {t.summary(name)}" for name, t in self.truncation.items()]
        out.append(f"  supervision: {self.supervision.summary()}")
        out.append(f"  {self.samples} samples -> {self.rows} rows, {self.tokens} tokens")
        if self.packing_efficiency is not None:
            out.append(f"  packing efficiency: {self.packing_efficiency:.1%}")
        return out


@dataclass
class PreparedSplit:
    dataset: Any  # datasets.Dataset with COLUMNS (position_ids only when packed or PoSE)
    report: SplitReport
    cache_key: str | None = None
    from_cache: bool = False


def load_sources(specs: list[DatasetSpec], settings: DataSettings, *, strict: bool = True,
                 progress: bool | None = None) -> list[tuple[DatasetSpec, LoadedSource]]:
    return [(spec, load_records(spec, strict=strict, num_proc=settings.num_proc, progress=progress)) for spec in specs]


def _origins(sources: list[tuple[DatasetSpec, LoadedSource]]) -> dict[int, tuple[int, int]]:
    """id(record) -> (source number, record index in that source), for error messages after mixing
    (``LoadedSource.where`` names the record)."""
    return {id(r): (s, i) for s, (_, loaded) in enumerate(sources) for i, r in enumerate(loaded.records)}


@dataclass
class Fitted:
    """One record after encoding and truncation: where it comes from, its full encoding, and the samples
    training gets from it (none when dropped, several when chunked)."""

    record: Any
    source: str
    index: int
    encoded: Encoded
    samples: list[Encoded]
    truncation: TruncationReport

    @property
    def outcome(self) -> str:
        return self.truncation.outcome()


def _rule_of(spec: DatasetSpec, settings: DataSettings, encoded: Encoded) -> str:
    """The truncation rule of a sample: its dataset's, else ``data.truncation``, else the default of its kind."""
    return spec.truncation or settings.truncation or default_truncation(is_text(encoded))


def fit_record(record: Any, encoded: Encoded, spec: DatasetSpec, tokenizer: Any, template: Any,
               settings: DataSettings, rng: random.Random, report: TruncationReport, *, source: str) -> list[Encoded]:
    """The samples training gets from one encoded record, by its dataset's rule and lengths; conversations cut
    between messages are re-rendered (see :func:`oa_data.truncation.truncate`). ``oa data preview`` and
    :func:`encode_split` both go through here."""
    max_length = spec.max_length or settings.max_length
    rule = _rule_of(spec, settings, encoded)
    problem = truncation_problem(rule, is_text(encoded))
    if problem is not None:
        raise OAError(f"{source}: {problem}", hint="set another truncation for this dataset (datasets[i].truncation)")
    cuts_messages = not is_text(encoded) and (rule == "random_cut" or len(encoded) > max_length)
    if cuts_messages and not encoded.turns:  # turn ends come from the cross-check pass
        encoded = encode_record(record, tokenizer, template, settings, source=source)
    reencode = reencoder(record, tokenizer, template, settings, source=source) if cuts_messages else None
    return fit(encoded, max_length, rule, spec.min_length or settings.min_length, rng, report, reencode)


def truncation_rng(seed: int, split: str) -> random.Random:
    """The random stream of a split's truncation (``random_cut``, ``random_window``): one per run seed."""
    return random.Random(f"{seed}:{split}:truncate")


def fitted_records(records: list[Any], sources: list[tuple[DatasetSpec, LoadedSource]], tokenizer: Any,
                   template: Any, settings: DataSettings, report: SplitReport, seed: int,
                   progress: bool | None = None, chunk: int = 1000) -> Iterator[Fitted]:
    """Encode (batched tokenization) and fit every record in order (:func:`fit_record`), counting into
    ``report``."""
    origins = _origins(sources)
    rng = truncation_rng(seed, report.split)
    for name in (loaded.source for _, loaded in sources):
        report.truncation.setdefault(name, TruncationReport())
    bar = _progress(len(records), f"tokenizing {report.split}", progress)
    for start in range(0, len(records), chunk):
        batch = records[start:start + chunk]
        where = [origins[id(r)] for r in batch]
        named = [(sources[s][1].where(i), None) for s, i in where]
        checks = [cross_checked(start + k, settings.mask_cross_check)
                  or (sources[s][0].truncation or settings.truncation) == "random_cut"  # cuts every sample by turns
                  for k, (s, _) in enumerate(where)]
        encoded = encode_records(batch, tokenizer, template, settings, origins=named, cross_check=checks)
        for record, enc, (s, i) in zip(batch, encoded, where, strict=True):
            spec, loaded = sources[s]
            report.supervision.add(enc)
            one = TruncationReport()
            samples = fit_record(record, enc, spec, tokenizer, template, settings, rng, one, source=loaded.where(i))
            report.truncation[loaded.source].merge(one)
            yield Fitted(record, loaded.source, i, enc, samples, one)
        bar.update(len(batch))
    bar.close()


def encode_split(records: list[Any], sources: list[tuple[DatasetSpec, LoadedSource]], tokenizer: Any,
                 template: Any, settings: DataSettings, report: SplitReport, seed: int,
                 progress: bool | None = None, chunk: int = 1000) -> list[Encoded | dict]:
    """Every sample of a split (:func:`fitted_records`), with PoSE positions when configured."""
    from oa_data.pose import pose_position_ids

    pose_rng = random.Random(f"{seed}:{report.split}:pose")
    out: list[Encoded | dict] = []
    for fitted in fitted_records(records, sources, tokenizer, template, settings, report, seed, progress, chunk):
        counts = report.produced.setdefault(fitted.source, [0, 0, 0])
        for enc in fitted.samples:
            counts[0] += 1
            counts[1] += len(enc)
            counts[2] += enc.num_supervised
            if settings.pose is not None:
                p = settings.pose
                positions = pose_position_ids(enc.input_ids, p.max_context_len, p.split_on_token_ids, p.num_chunks, pose_rng)
                enc = {"input_ids": enc.input_ids, "labels": enc.labels, "position_ids": positions}
            out.append(enc)
    return out


def preview_split(cfg: RunConfig, run_tokenizer: RunTokenizer, split: str = "train", num: int = 3) -> list[Fitted]:
    """The first ``num`` records of a split as training gets them (same mix, encoding, truncation and
    random stream as :func:`prepare_split`; before PoSE positions and packing), for ``oa data preview``."""
    settings = cfg.section("data", DataSettings)
    specs = list(cfg.datasets if split == "train" else cfg.eval_datasets)
    sources = load_sources(specs, settings, progress=False)
    records, mix_report = mix(sources, cfg.seed, 0, settings.per_epoch_resample)
    report = SplitReport(split, mix_report, samples=len(records))
    return list(fitted_records(records[:num], sources, run_tokenizer.tokenizer, run_tokenizer.template, settings,
                               report, cfg.seed, progress=False))


def cross_checked(k: int, fraction: float) -> bool:
    """Whether sample ``k`` of a split gets the prefix-rendering mask check: the first 64, then an
    evenly spread ``fraction`` of the rest."""
    return k < 64 or int((k - 63) * fraction) > int((k - 64) * fraction)


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=(not enabled) if enabled is not None else None, leave=False)


def _row(ex: Encoded | dict) -> dict[str, list[int]]:
    if isinstance(ex, dict):
        return {k: list(v) for k, v in ex.items() if k in COLUMNS}
    return {"input_ids": list(ex.input_ids), "labels": list(ex.labels)}


def to_rows(examples: list[Encoded | dict], settings: DataSettings, report: SplitReport) -> list[dict]:
    """Rows for the dataset: packed best-fit-decreasing into ``max_length`` bins when ``data.packing``."""
    from oa_data.packing import collate_packed, pack_bfd, packing_efficiency

    if not settings.packing:
        rows = [_row(ex) for ex in examples]
    else:
        lengths = [len(_row(ex)["input_ids"]) for ex in examples]
        bins = pack_bfd(lengths, settings.max_length)
        report.packing_efficiency = packing_efficiency(bins, lengths, settings.max_length)
        rows = []
        for b in bins:
            packed = collate_packed(examples, b)
            rows.append({k: packed[k] for k in COLUMNS})
    report.rows = len(rows)
    report.tokens = sum(len(r["input_ids"]) for r in rows)
    return rows


def template_text(template: Any) -> str | None:
    """Everything about a template that changes its output (for the cache key)."""
    if template is None:
        return None
    return json.dumps([template.jinja, template.end_of_turn, dict(template.variables)], sort_keys=True, default=str)


def cache_key(cfg: RunConfig, specs: list[DatasetSpec], tokenizer: Any, template_text: str | None, split: str, epoch: int) -> str:
    from oa_data.cache import fingerprint

    settings = cfg.section("data", DataSettings)
    files = [f for spec in specs for f in (data_files(spec.path) or [spec.path])]
    options = {
        "split": split,
        "seed": cfg.seed,
        "epoch": epoch if settings.per_epoch_resample else 0,
        "data": settings.model_dump(mode="json", exclude={"cache_dir", "num_proc", "max_drop_fraction"}),
        "datasets": [s.model_dump(mode="json") for s in specs],
        "vocab": len(tokenizer),
        "special": sorted(map(str, tokenizer.all_special_tokens)),
    }
    tok_dir = getattr(tokenizer, "name_or_path", None)
    return fingerprint(files, tok_dir, template_text, options)


def prepare_split(cfg: RunConfig, run_tokenizer: RunTokenizer, split: str = "train", *, epoch: int = 0,
                  use_cache: bool = True, progress: bool | None = None) -> PreparedSplit | None:
    """Tokenized dataset of one split (``train``: ``datasets``, ``eval``: ``eval_datasets``); None if empty.
    ``run_tokenizer`` comes from :func:`oa_data.tokenizer.prepare_run_tokenizer` (the tokenizer is not changed)."""
    import datasets

    settings = cfg.section("data", DataSettings)
    specs = list(cfg.datasets if split == "train" else cfg.eval_datasets)
    if not specs:
        return None
    tokenizer, template = run_tokenizer.tokenizer, run_tokenizer.template
    key = cache_key(cfg, specs, tokenizer, template_text(template), split, epoch) if use_cache else None
    meta_name = "oa_report.json"

    built: list[SplitReport] = []  # the report, when this call builds the split

    def build():
        sources = load_sources(specs, settings, progress=progress)
        records, mix_report = mix(sources, cfg.seed, epoch, settings.per_epoch_resample)
        report = SplitReport(split, mix_report, samples=len(records))
        examples = encode_split(records, sources, tokenizer, template, settings, report, cfg.seed, progress)
        report.supervision.check(f"{split} data", settings.train_on_inputs)
        if not examples:
            raise OAError(f"{split} data: every sample was dropped", hint="; ".join(t.summary(n) for n, t in report.truncation.items()))
        rows = to_rows(examples, settings, report)
        report.datasets = summarize(specs, report)
        ds = datasets.Dataset.from_list(rows)
        ds.info.description = json.dumps({meta_name: report.lines(), "datasets": [d.to_dict() for d in report.datasets]})
        built.append(report)
        return ds

    if key is None:
        prepared = PreparedSplit(build(), built[0])
    else:
        from oa_data.cache import cached

        ds = cached(key, build, settings.cache_dir)
        if built:
            prepared = PreparedSplit(ds, built[0], key)
        else:  # a cache hit: the report of the build that made it
            saved = json.loads(ds.info.description or "{}")
            report = CachedReport(split, saved.get(meta_name, []), [DatasetSummary(**d) for d in saved.get("datasets", [])])
            prepared = PreparedSplit(ds, report, key, from_cache=True)
    check_losses(prepared.report.datasets, settings.max_drop_fraction)
    return prepared


def summarize(specs: list[DatasetSpec], report: SplitReport) -> list[DatasetSummary]:
    """One :class:`DatasetSummary` per dataset entry of the split (in config order)."""
    key = "datasets" if report.split == "train" else "eval_datasets"
    out = []
    for i, (spec, mixed) in enumerate(zip(specs, report.mix.sources, strict=True)):
        cut = report.truncation.get(mixed.source, TruncationReport())
        samples, tokens, supervised = report.produced.get(mixed.source, [0, 0, 0])
        out.append(DatasetSummary(
            f"{key}.{i}", mixed.source, spec.format, rows=mixed.rows, invalid=mixed.dropped_invalid,
            records=mixed.available, taken=mixed.taken, kept=cut.kept, truncated=cut.truncated, chunked=cut.chunked,
            dropped_too_long=cut.dropped_too_long, dropped_too_short=cut.dropped_too_short,
            dropped_unsupervised=cut.dropped_unsupervised, samples=samples, tokens=tokens, supervised=supervised))
    return out


@dataclass
class CachedReport:
    """The report of a split loaded from the cache (its lines and dataset summaries, as written when built)."""

    split: str
    saved_lines: list[str]
    datasets: list[DatasetSummary] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*self.saved_lines, "  (loaded from the tokenized cache)"]


def prepare_splits(cfg: RunConfig, run_tokenizer: RunTokenizer, *, epoch: int = 0,
                   progress: bool | None = None) -> tuple[PreparedSplit, PreparedSplit | None]:
    """The train and eval splits (eval None without ``eval_datasets``) with their reports."""
    train = prepare_split(cfg, run_tokenizer, "train", epoch=epoch, progress=progress)
    if train is None:
        raise OAError("no training data: the config has no `datasets`", hint="add at least one entry under datasets:")
    return train, prepare_split(cfg, run_tokenizer, "eval", epoch=epoch, progress=progress)


def build_sft_datasets(cfg: RunConfig, run_tokenizer: RunTokenizer, *, epoch: int = 0, progress: bool | None = None):
    """``(train, eval)`` datasets of ``input_ids``/``labels`` (+ ``position_ids``) for SFT and pretraining."""
    train, evaluation = prepare_splits(cfg, run_tokenizer, epoch=epoch, progress=progress)
    return train.dataset, (evaluation.dataset if evaluation else None)


__all__ = [
    "Fitted",
    "PreparedSplit",
    "RecordError",
    "SplitReport",
    "build_sft_datasets",
    "fit_record",
    "prepare_split",
    "preview_split",
]
