"""Load one data source into validated core records.

Each raw row goes: file/hub reader (``datasets``) -> ``field_map`` rename -> ``format.parse`` -> record
validation (``oa_core.schema``). Text files must be UTF-8 (a bad byte is reported by line and byte offset).

Problems name where the record came from, then the field: ``file:LINE`` (the 1-based line the row starts on)
for text files read by row (jsonl, json arrays, csv/tsv, txt paragraphs; compressed too), else
``file: record N (0-based row)`` (parquet, arrow, saved datasets, hub datasets, JSON read from a top-level
field) or ``file: record N (0-based, as read)`` for ``read`` formats. :meth:`LoadedSource.where` names a
record the same way for later steps (encoding, ``oa data validate``). ``strict=True`` raises the first
problem; ``strict=False`` checks every row and collects one line per problem (``oa data validate``).

A format's options model may define ``json_field() -> str | None``: JSON files are then read from that
top-level key (``qa_json`` reads ``{"train": [...], "test": [...]}`` this way); an options field named
``split`` defaults to the dataset's ``split``.
"""

from __future__ import annotations

import glob
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from oa_core.config import DatasetSpec, InputSpec
from oa_core.errors import OAError, RecordError
from oa_core.plugins import Registry, get_registry
from oa_core.schema import describe_validation_error
from oa_data.textfiles import TEXT_BUILDERS, check_utf8, json_syntax_error, row_lines

# file suffix (after removing a compression suffix) -> `datasets` builder
BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet", ".arrow": "arrow", ".txt": "text"}
COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
BATCH = 1000


class RowPlaces:
    """Names row ``i`` of one file in messages: ``file:LINE`` for text files read by row, else
    ``file: record i (0-based row)``, or ``(0-based, as read)`` for the records a format's ``read`` yields.
    The lines are found on first use."""

    def __init__(self, name: str, n_rows: int, *, json_field: str | None = None, reader: bool = False):
        self.name, self.n_rows, self.json_field, self.reader = name, n_rows, json_field, reader
        self._lines: Sequence[int] | None = None
        self._looked = reader

    def __call__(self, row: int) -> str:
        lines = self.lines()
        if lines is not None:
            return f"{self.name}:{lines[row]}"
        return f"{self.name}: record {row} ({'0-based, as read' if self.reader else '0-based row'})"

    def lines(self) -> Sequence[int] | None:
        """The line each row starts on; None when rows are not lines, or the lines found do not match the rows."""
        if not self._looked:
            self._looked = True
            builder = builder_for(self.name)
            if builder in TEXT_BUILDERS and Path(self.name).is_file():
                sep = "\t" if _is_tsv(self.name) else ","
                found = row_lines(self.name, builder, json_field=self.json_field, sep=sep)
                self._lines = found if found is not None and len(found) == self.n_rows else None
        return self._lines


@dataclass
class LoadedSource:
    """The records of one source and one line per invalid (dropped) row. ``places`` names each file's rows;
    ``file_of[k]`` and ``row_of[k]`` locate record ``k`` (a row may give several records)."""

    records: list[Any]
    errors: list[str]
    source: str
    n_rows: int
    format: str = ""
    files: list[str] = field(default_factory=list)
    places: list[RowPlaces] = field(default_factory=list)
    file_of: array = field(default_factory=lambda: array("l"))
    row_of: array = field(default_factory=lambda: array("q"))

    @property
    def n_invalid(self) -> int:
        return len(self.errors)

    def where(self, k: int) -> str:
        """Where record ``k`` came from, named as loading problems name it (``file:LINE`` or ``file: record N``)."""
        if k < len(self.row_of):
            return self.places[self.file_of[k]](self.row_of[k])
        return f"{self.source}: record {k}"


SFT_RECORDS = ("Conversation", "PromptCompletion", "Text")  # what supervised fine-tuning and pretraining learn from


def record_type_name(format_name: str) -> str | None:
    """The name of the record type a registered dataset format makes; None for an unknown format (the config's
    name check reports it)."""
    try:
        return get_registry().get("dataset_format", format_name).record_type.__name__
    except OAError:
        return None


def load_input(spec: InputSpec, *, purpose: str, progress: bool | None = None) -> tuple[LoadedSource, list[Any]]:
    """The records a command runs on (``oa infer``, ``oa augment``): ``spec`` read strictly through its format
    (bad rows are one-line errors naming file, line and field), the first ``spec.limit`` of them; an error when
    there are none (``purpose``: "to run on", "to augment", ...)."""
    dataset = DatasetSpec(path=spec.path, format=spec.format, split=spec.split, subset=spec.subset,
                          field_map=spec.field_map, options=spec.options)
    loaded = load_records(dataset, strict=True, progress=progress)
    records = loaded.records[: spec.limit] if spec.limit else loaded.records
    if not records:
        raise OAError(f"{spec.path}: no records {purpose}", hint="check the file and its format")
    return loaded, records


def load_records(spec: DatasetSpec, *, registry: Registry | None = None, strict: bool = True, num_proc: int = 1,
                 cache_dir: str | None = None, progress: bool | None = None) -> LoadedSource:
    """Read ``spec`` (local file/folder/glob or hub dataset id) through its format into core records.

    ``progress=None`` shows a progress bar only on a terminal.
    """
    registry = registry or get_registry()
    fmt = registry.get("dataset_format", spec.format)
    options = format_options(spec, fmt)
    _check_field_map(spec, fmt)
    if fmt.read is not None and fmt.parse is None:
        return _load_with_reader(spec, fmt, options, strict)
    json_field = options.json_field() if hasattr(options, "json_field") else None
    loaded = LoadedSource([], [], _describe(spec), 0, spec.format)
    for source, ds in open_source(spec, json_field=json_field, cache_dir=cache_dir):
        loaded.files.append(source)
        loaded.places.append(RowPlaces(source, len(ds), json_field=json_field))
        if len(ds) == 0:
            continue
        ds = _rename_columns(ds, spec, source)
        convert = _Converter(fmt, options, loaded.places[-1], spec.format)
        if num_proc > 1 and len(ds) > BATCH:
            recs, rows, errs = _convert_parallel(ds, convert, num_proc, strict)
        else:
            recs, rows, errs = _convert_rows(ds, convert, strict, progress)
        _add(loaded, recs, rows, errs)
        loaded.n_rows += len(ds)
    return loaded


def _add(loaded: LoadedSource, records: list, rows: Iterable[int], errors: list[str]) -> None:
    """Append the records (from ``rows`` of the last file) and problems of one file."""
    loaded.records += records
    loaded.row_of.extend(rows)
    loaded.file_of.extend([len(loaded.places) - 1] * len(records))
    loaded.errors += errors


def _describe(spec: DatasetSpec) -> str:
    return spec.path if _is_local(spec.path) else f"{spec.path}:{spec.split}"


# ---------------------------------------------------------------- options and field map


def format_options(spec: DatasetSpec, fmt) -> BaseModel | None:
    """The dataset's ``options`` validated by the format's options model (``split`` defaults to spec.split)."""
    if fmt.options is None:
        if spec.options:
            raise OAError(f"dataset '{spec.path}': format '{spec.format}' takes no options (got {', '.join(spec.options)})",
                          hint="remove 'options' from this dataset")
        return None
    data = dict(spec.options)
    if "split" in fmt.options.model_fields and "split" not in data:
        data["split"] = spec.split
    try:
        return fmt.options.model_validate(data)
    except ValidationError as e:
        allowed = ", ".join(fmt.options.model_fields)
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
        raise OAError(f"dataset '{spec.path}': options.{loc}: {msg}", hint=f"format '{spec.format}' options: {allowed}") from None


def _check_field_map(spec: DatasetSpec, fmt) -> None:
    if spec.field_map and fmt.parse is None:
        raise OAError(f"dataset '{spec.path}': format '{spec.format}' reads whole files; field_map does not apply",
                      hint="remove field_map")
    unknown = [k for k in spec.field_map if fmt.fields and k not in fmt.fields]
    if unknown:
        raise OAError(f"dataset '{spec.path}': field_map.{unknown[0]}: '{unknown[0]}' is not a field of format '{spec.format}'",
                      hint=f"field_map maps the format's fields ({', '.join(fmt.fields)}) to your column names")


def _rename_columns(ds, spec: DatasetSpec, source: str):
    if not spec.field_map:
        return ds
    missing = [col for col in spec.field_map.values() if col not in ds.column_names]
    if missing:
        raise OAError(f"{source}: field_map: column '{missing[0]}' not found",
                      hint=f"the file has columns: {', '.join(ds.column_names)}")
    mapping = {col: canon for canon, col in spec.field_map.items() if col != canon}
    clashes = [canon for canon in mapping.values() if canon in ds.column_names and canon not in mapping]
    if clashes:  # an unmapped column already has the canonical name: it is replaced by the mapped one
        ds = ds.remove_columns(clashes)
    return ds.rename_columns(mapping)


# ---------------------------------------------------------------- reading files and hub datasets


def _is_local(path: str) -> bool:
    p = Path(path).expanduser()
    return (p.exists() or path.startswith((".", "/", "~")) or glob.has_magic(path)
            or any(path.endswith(s) or path.endswith(s + c) for s in BUILDERS for c in ("", *COMPRESSION)))


def builder_for(path: str | Path) -> str | None:
    """The ``datasets`` builder for a file name (compression suffixes ignored), or None."""
    name = str(path).lower()
    for c in COMPRESSION:
        name = name.removesuffix(c)
    return BUILDERS.get(Path(name).suffix)


def data_files(path: str) -> list[Path]:
    """The data files of a local path: the file itself, a glob's matches or a folder's files (sorted)."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        found = sorted(f for f in p.rglob("*") if f.is_file() and builder_for(f) and not f.name.startswith("."))
    elif glob.has_magic(path):
        found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    else:
        raise OAError(f"{path}: file not found", hint="check the dataset path (relative paths start at the working directory)")
    if not found:
        raise OAError(f"{path}: no data files found", hint=f"expected files ending in {', '.join(BUILDERS)} (optionally .gz)")
    return found


def open_source(spec: DatasetSpec, *, json_field: str | None = None, cache_dir: str | None = None) -> Iterator[tuple[str, Any]]:
    """Yield ``(source name, datasets.Dataset)`` per file of a local source, or once for a hub dataset."""
    import datasets

    path = spec.path
    p = Path(path).expanduser()
    if p.is_dir() and ((p / "state.json").exists() or (p / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise OAError(f"{path}: split '{spec.split}' not found", hint=f"available splits: {', '.join(ds)}")
            ds = ds[spec.split]
        yield str(p), ds
        return
    if not _is_local(path):
        yield f"{path}:{spec.split}", load_hub(spec, cache_dir=cache_dir)
        return
    for f in data_files(path):
        yield str(f), read_file(f, json_field=json_field, cache_dir=cache_dir)


def read_file(path: str | Path, *, json_field: str | None = None, cache_dir: str | None = None):
    """Read one local file (jsonl/json/csv/tsv/parquet/arrow/txt, optionally compressed) as a Dataset."""
    import datasets

    builder = builder_for(path)
    if builder is None:
        raise OAError(f"{path}: unknown file type", hint=f"use one of {', '.join(BUILDERS)} (optionally .gz)")
    kwargs: dict[str, Any] = {}
    if builder == "json" and json_field:
        kwargs["field"] = json_field
    if builder == "text":
        kwargs["sample_by"] = "paragraph"
    if _is_tsv(path):
        kwargs["sep"] = "\t"
    if Path(path).stat().st_size == 0:
        return datasets.Dataset.from_dict({})
    if builder in TEXT_BUILDERS:
        check_utf8(path)
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir, **kwargs)
    except Exception as e:  # datasets wraps parser errors; report the root cause on one line
        if isinstance(_root(e), StopIteration):  # a compressed file with no rows
            return datasets.Dataset.from_dict({})
        syntax = json_syntax_error(path, json_field) if builder == "json" else None
        problem = f":{syntax}" if syntax else f": cannot read as {builder}: {_root_cause(e)}"
        raise OAError(f"{path}{problem}", hint=_read_hint(builder, json_field)) from None


def _is_tsv(path: str | Path) -> bool:
    name = str(path).lower()
    for c in COMPRESSION:
        name = name.removesuffix(c)
    return name.endswith(".tsv")


def load_hub(spec: DatasetSpec, *, cache_dir: str | None = None):
    """Load ``spec.path`` from the Hugging Face hub (``subset`` = config name, ``split``)."""
    import datasets

    try:
        return datasets.load_dataset(spec.path, spec.subset, split=spec.split, cache_dir=cache_dir)
    except Exception as e:
        raise OAError(f"{spec.path}: cannot load hub dataset (subset={spec.subset}, split={spec.split}): {_root_cause(e)}",
                      hint="check the id/split, log in for gated sets (HF_TOKEN), or give a local file path") from None


def _root(e: BaseException) -> BaseException:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    return e


def _root_cause(e: BaseException) -> str:
    root = _root(e)
    return " ".join(str(root).split())[:300] or type(root).__name__


def _read_hint(builder: str, json_field: str | None) -> str:
    if builder == "json" and json_field:
        return f"a JSON object with a top-level list '{json_field}' of rows is expected"
    if builder == "json":
        return "expected one JSON object per line (jsonl) or a JSON list of objects; columns must keep one type"
    return f"check that the file is valid {builder}"


# ---------------------------------------------------------------- converting rows


class _Problem(Exception):
    def __init__(self, detail: str, hint: str | None = None):
        self.detail, self.hint = detail, hint
        super().__init__(detail)


class _Converter:
    """Row -> list of validated records, or :class:`_Problem`."""

    def __init__(self, fmt, options, places: RowPlaces, format_name: str):
        self.fmt, self.options, self.places, self.name = fmt, options, places, format_name

    def __call__(self, row: dict) -> list[Any]:
        fmt = self.fmt
        try:
            out = fmt.parse(row, self.options) if fmt.options is not None else fmt.parse(row)
        except KeyError as e:
            field_name = e.args[0] if e.args else "?"
            raise _Problem(f"field '{field_name}': missing", self._field_hint(row)) from None
        except (ValueError, TypeError) as e:
            raise _Problem(" ".join(str(e).split()), self._field_hint(row) if "missing" in str(e) else None) from None
        except Exception as e:  # a bug in a (plugin) format: still one line, naming the format
            raise _Problem(f"format '{self.name}' failed: {type(e).__name__}: {' '.join(str(e).split())}",
                           "this looks like a bug in the format; report it to its plugin") from None
        if fmt.many:
            if not isinstance(out, list):
                raise _Problem(f"format '{self.name}' returned {type(out).__name__}, expected a list (many=True)")
            return [self.validate(item) for item in out]
        return [self.validate(out)]

    def validate(self, item: Any) -> Any:
        record_type = self.fmt.record_type
        if isinstance(item, record_type):
            return item
        if isinstance(item, BaseModel):
            item = item.model_dump()
        if isinstance(item, dict) and item.get("kind") == record_type.model_fields["kind"].default:
            item = {k: v for k, v in item.items() if k != "kind"}
        try:
            return record_type.model_validate(item)
        except ValidationError as e:
            raise _Problem(describe_validation_error(e, record_type), f"format '{self.name}' makes {record_type.__name__} records") from None

    def _field_hint(self, row: dict) -> str:
        cols = ", ".join(k for k, v in row.items() if v is not None) or "none"
        return f"the row has columns: {cols}; rename with field_map: {{<field>: <column>}}"

    def error(self, row: int, detail: str, hint: str | None) -> RecordError:
        return RecordError(f"{self.places(row)}: {detail}", hint=hint)


def _rows(ds) -> Iterator[dict]:
    for batch in ds.iter(batch_size=BATCH):
        cols = list(batch)
        for values in zip(*(batch[c] for c in cols), strict=True):
            yield dict(zip(cols, values, strict=True))


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="rows", disable=None if enabled is None else not enabled,
                leave=False, mininterval=0.5)


def _convert_rows(ds, convert: _Converter, strict: bool, progress: bool | None) -> tuple[list, list[int], list[str]]:
    """The records, the row of each, and the problems."""
    records: list[Any] = []
    rows: list[int] = []
    errors: list[str] = []
    for i, row in enumerate(_progress(_rows(ds), len(ds), f"parse {Path(convert.places.name).name}", progress)):
        try:
            recs = convert(row)
        except _Problem as p:
            if strict:
                raise convert.error(i, p.detail, p.hint) from None
            errors.append(str(convert.error(i, p.detail, p.hint)))
            continue
        records += recs
        rows += [i] * len(recs)
    return records, rows, errors


def _convert_batch(batch: dict, indices: list[int], convert: _Converter) -> dict:
    out: dict[str, list] = {"record": [], "index": [], "detail": [], "hint": []}
    cols = list(batch)
    for i, values in zip(indices, zip(*(batch[c] for c in cols), strict=True), strict=True):
        try:
            recs = [r.model_dump_json() for r in convert(dict(zip(cols, values, strict=True)))]
            problem = None
        except _Problem as p:
            recs, problem = [None], p
        for rec in recs:
            out["record"].append(rec)
            out["index"].append(i)
            out["detail"].append(problem and problem.detail)
            out["hint"].append(problem and problem.hint)
    return out


def _convert_parallel(ds, convert: _Converter, num_proc: int, strict: bool) -> tuple[list, list[int], list[str]]:
    """Parse and validate with ``num_proc`` worker processes (``datasets.map``), then rebuild the records."""
    done = ds.map(_convert_batch, batched=True, batch_size=BATCH, with_indices=True, num_proc=num_proc,
                  remove_columns=ds.column_names, fn_kwargs={"convert": convert},
                  desc=f"parse {Path(convert.places.name).name}", load_from_cache_file=False)
    record_type = convert.fmt.record_type
    records, rows, errors = [], [], []
    for row in _rows(done):
        if row["record"] is not None:
            records.append(record_type.model_validate_json(row["record"]))
            rows.append(row["index"])
        elif strict:
            raise convert.error(row["index"], row["detail"], row["hint"])
        else:
            errors.append(str(convert.error(row["index"], row["detail"], row["hint"])))
    return records, rows, errors


# ---------------------------------------------------------------- whole-file readers


def _load_with_reader(spec: DatasetSpec, fmt, options, strict: bool) -> LoadedSource:
    """Formats with ``read(path, options)``: the index is the position of the yielded record."""
    places = RowPlaces(spec.path, 0, reader=True)
    convert = _Converter(fmt, options, places, spec.format)
    loaded = LoadedSource([], [], spec.path, 0, spec.format, [spec.path], [places])
    try:
        for n, item in enumerate(fmt.read(spec.path, options)):
            loaded.n_rows = n + 1
            try:
                recs = [convert.validate(x) for x in (item if fmt.many and isinstance(item, list) else [item])]
            except _Problem as p:
                if strict:
                    raise convert.error(n, p.detail, p.hint) from None
                loaded.errors.append(str(convert.error(n, p.detail, p.hint)))
                continue
            _add(loaded, recs, [n] * len(recs), [])
    except OAError as e:
        if strict:
            raise
        loaded.errors.append(str(e))
    return loaded

