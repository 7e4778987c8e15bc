"""Reading sources: file types, compression, folders, hub ids, strict and collecting modes, readers."""

import gzip
import json
import re
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oa_core.config import DatasetSpec
from oa_core.errors import OAError, RecordError
from oa_core.extensions import DatasetFormat
from oa_core.plugins import PluginManager
from oa_core.schema import Conversation, PreferencePair, Text
from oa_data.loading import load_records

ROWS = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(5)]
EXPECTED = [Conversation(messages=[{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": str(i)}])
            for i in range(5)]


@pytest.fixture(scope="module")
def registry():
    return PluginManager().registry()


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def _csv(rows, sep=","):
    return "instruction,input,output\n".replace(",", sep) + "".join(f"{r['instruction']}{sep}{sep}{r['output']}\n" for r in rows)


def _arrow(path, stream):
    table = pa.Table.from_pylist(ROWS)
    with pa.OSFile(str(path), "wb") as sink:
        with (pa.ipc.new_stream if stream else pa.ipc.new_file)(sink, table.schema) as writer:
            writer.write_table(table)


WRITERS = {
    "data.jsonl": lambda p: p.write_text(_jsonl(ROWS)),
    "data.jsonl.gz": lambda p: p.write_bytes(gzip.compress(_jsonl(ROWS).encode())),
    "data.json": lambda p: p.write_text(json.dumps(ROWS)),
    "data.json.gz": lambda p: p.write_bytes(gzip.compress(json.dumps(ROWS).encode())),
    "data.csv": lambda p: p.write_text(_csv(ROWS)),
    "data.csv.gz": lambda p: p.write_bytes(gzip.compress(_csv(ROWS).encode())),
    "data.tsv": lambda p: p.write_text(_csv(ROWS, "\t")),
    "data.parquet": lambda p: pq.write_table(pa.Table.from_pylist(ROWS), str(p)),
    "stream.arrow": lambda p: _arrow(p, stream=True),
    "file.arrow": lambda p: _arrow(p, stream=False),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_file_type_gives_the_same_records(tmp_path, registry, name):
    path = tmp_path / name
    WRITERS[name](path)
    loaded = load_records(DatasetSpec(path=str(path), format="alpaca"), registry=registry)
    assert loaded.records == EXPECTED
    assert (loaded.n_rows, loaded.errors, loaded.files) == (5, [], [str(path)])


def test_folder_and_glob_read_every_file_in_name_order(tmp_path, registry):
    (tmp_path / "b.jsonl").write_text(_jsonl(ROWS[3:]))
    (tmp_path / "a.jsonl").write_text(_jsonl(ROWS[:3]))
    (tmp_path / "notes.md").write_text("not data")
    for path in (tmp_path, tmp_path / "*.jsonl"):
        loaded = load_records(DatasetSpec(path=str(path), format="alpaca"), registry=registry)
        assert loaded.records == EXPECTED
        assert loaded.files == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]


def test_saved_dataset_folder_uses_the_split(tmp_path, registry):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}).save_to_disk(tmp_path / "saved")
    loaded = load_records(DatasetSpec(path=str(tmp_path / "saved"), format="alpaca", split="test"), registry=registry)
    assert loaded.records == EXPECTED[2:]
    with pytest.raises(OAError, match=r"split 'dev' not found.*available splits: train, test"):
        load_records(DatasetSpec(path=str(tmp_path / "saved"), format="alpaca", split="dev"), registry=registry)


def test_text_file_gives_one_record_per_paragraph(tmp_path, registry):
    (tmp_path / "book.txt").write_text("First para\nstill first.\n\nSecond para.\n")
    loaded = load_records(DatasetSpec(path=str(tmp_path / "book.txt"), format="pretraining"), registry=registry)
    assert loaded.records == [Text(text="First para\nstill first."), Text(text="Second para.\n")]


def test_missing_file_unknown_type_and_broken_json_are_one_line_errors(tmp_path, registry):
    with pytest.raises(OAError, match=r"nope\.jsonl: file not found") as err:
        load_records(DatasetSpec(path=str(tmp_path / "nope.jsonl"), format="alpaca"), registry=registry)
    assert err.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(OAError, match=r"empty: no data files found"):
        load_records(DatasetSpec(path=str(tmp_path / "empty"), format="alpaca"), registry=registry)
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    with pytest.raises(OAError, match=r"bad\.jsonl:2:17: invalid JSON: Expecting value \(hint: expected one JSON object per line") as err:
        load_records(DatasetSpec(path=str(tmp_path / "bad.jsonl"), format="alpaca"), registry=registry)
    assert "\n" not in str(err.value)
    with pytest.raises(OAError, match="unknown dataset format 'alpacca' \\(did you mean 'alpaca'\\?\\)"):
        load_records(DatasetSpec(path=str(tmp_path / "bad.jsonl"), format="alpacca"), registry=registry)


def test_collecting_mode_checks_every_row_and_keeps_the_good_ones(tmp_path, registry):
    rows = [ROWS[0], {"instruction": "x"}, ROWS[1], {"input": "y", "output": "z"}, ROWS[2]]
    path = tmp_path / "mixed.jsonl"
    path.write_text(_jsonl(rows))
    spec = DatasetSpec(path=str(path), format="alpaca")
    with pytest.raises(RecordError, match=r"mixed\.jsonl:2: field 'output': missing or null"):
        load_records(spec, registry=registry)
    loaded = load_records(spec, registry=registry, strict=False)
    assert loaded.records == EXPECTED[:3] and loaded.n_rows == 5 and loaded.n_invalid == 2
    assert loaded.errors[0].startswith(f"{path}:2: field 'output': missing or null (hint: ")
    assert loaded.errors[1].startswith(f"{path}:4: field 'instruction': missing or null")
    assert [loaded.where(k) for k in range(3)] == [f"{path}:1", f"{path}:3", f"{path}:5"]


def test_num_proc_gives_the_same_records_and_errors(tmp_path, registry):
    rows = [{"text": f"line {i}" if i % 997 else ""} for i in range(2500)]
    path = tmp_path / "big.jsonl"
    path.write_text(_jsonl(rows))
    spec = DatasetSpec(path=str(path), format="pretraining")
    serial = load_records(spec, registry=registry, strict=False)
    parallel = load_records(spec, registry=registry, strict=False, num_proc=2)
    assert parallel.records == serial.records and len(serial.records) == 2497
    assert parallel.errors == serial.errors and serial.errors[1].startswith(f"{path}:998: field 'text'")
    assert list(parallel.row_of) == list(serial.row_of) and parallel.where(996) == f"{path}:999"  # after dropped rows
    with pytest.raises(RecordError, match=r"big\.jsonl:1: field 'text'"):
        load_records(spec, registry=registry, num_proc=2)


def test_hub_ids_go_to_load_dataset_with_subset_and_split(registry):
    import datasets

    fake = datasets.Dataset.from_list(ROWS[:2])
    with mock.patch("datasets.load_dataset", return_value=fake) as load:
        loaded = load_records(DatasetSpec(path="someone/alpaca-like", format="alpaca", subset="en", split="train[:2]"),
                              registry=registry)
    load.assert_called_once_with("someone/alpaca-like", "en", split="train[:2]", cache_dir=None)
    assert loaded.records == EXPECTED[:2] and loaded.source == "someone/alpaca-like:train[:2]"


def test_hub_failure_is_one_line_with_the_root_cause(registry):
    def offline(*args, **kwargs):
        try:
            raise ConnectionError("Couldn't reach 'no-such-user/no-such-set' on the Hub\n(offline)")
        except ConnectionError as e:
            raise RuntimeError("wrapped") from e

    with mock.patch("datasets.load_dataset", side_effect=offline):
        with pytest.raises(OAError, match=r"no-such-user/no-such-set: cannot load hub dataset \(subset=None, split=train\): "
                                          r"Couldn't reach .* \(offline\) \(hint: check the id/split") as err:
            load_records(DatasetSpec(path="no-such-user/no-such-set", format="alpaca"), registry=registry)
    assert "\n" not in str(err.value)


def _registry_with(name, fmt):
    reg = PluginManager(entry_points=False).registry()
    reg._entries["dataset_format"][name] = reg.entry("dataset_format", "oa.text").__class__(
        "dataset_format", name, fmt, reg.entry("dataset_format", "oa.text").provider)
    return reg


def test_many_and_read_formats(tmp_path):
    def split_lines(row):
        return [{"text": t} for t in row["text"].split("|")]

    def read_pairs(path, options):
        for line in Path(path).read_text().splitlines():
            p, c, r = line.split("\t")
            yield {"prompt": p, "chosen": c or None, "rejected": r}

    (tmp_path / "t.jsonl").write_text(_jsonl([{"text": "a|b"}, {"text": "c"}, {"text": "d||e"}]))
    reg = _registry_with("split", DatasetFormat(Text, split_lines, ("text",), many=True))
    loaded = load_records(DatasetSpec(path=str(tmp_path / "t.jsonl"), format="split"), registry=reg, strict=False)
    assert loaded.records == [Text(text=t) for t in "abc"]  # a row with one bad record is dropped whole
    assert loaded.n_rows == 3 and loaded.errors == [f"{tmp_path / 't.jsonl'}:3: field 'text': String "
                                                    "should have at least 1 character (hint: format 'split' makes Text records)"]

    def buggy(row):
        return {"text": row["text"].upper()} if row["text"] != "c" else row.nope

    reg = _registry_with("buggy", DatasetFormat(Text, buggy, ("text",)))
    loaded = load_records(DatasetSpec(path=str(tmp_path / "t.jsonl"), format="buggy"), registry=reg, strict=False)
    assert loaded.records == [Text(text="A|B"), Text(text="D||E")]
    assert loaded.errors == [f"{tmp_path / 't.jsonl'}:2: format 'buggy' failed: AttributeError: 'dict' "
                             "object has no attribute 'nope' (hint: this looks like a bug in the format; report it to its plugin)"]

    (tmp_path / "p.tsv.txt").write_text("q\tgood\tbad\nq2\t\tbad\n")
    reg = _registry_with("pairs", DatasetFormat(PreferencePair, read=read_pairs))
    spec = DatasetSpec(path=str(tmp_path / "p.tsv.txt"), format="pairs")
    loaded = load_records(spec, registry=reg, strict=False)
    assert loaded.records == [PreferencePair(prompt="q", chosen="good", rejected="bad")] and loaded.n_rows == 2
    assert loaded.errors[0].startswith(f"{tmp_path / 'p.tsv.txt'}: record 1 (0-based, as read): field 'chosen")
    with pytest.raises(OAError, match="reads whole files; field_map does not apply"):
        load_records(spec.model_copy(update={"field_map": {"prompt": "q"}}), registry=reg)


ROOT = Path(__file__).resolve().parents[3]
SAMPLES = [
    (dict(path="examples/data/alpaca-seed/seed_tasks_alpaca.jsonl", format="alpaca"), 175, "conversation"),
    (dict(path="examples/data/gsm8k/train_500.jsonl", format="prompt_reference", field_map={"prompt": "question", "reference": "answer"},
          options={"reference_after": "####"}), 500, "prompt_reference"),
    (dict(path="examples/data/gsm8k/qa_gptneo.json", format="qa_json"), 100, "prompt_completion"),
    (dict(path="examples/data/gsm8k/qa_gptneo.json", format="qa_json", split="test"), 50, "prompt_completion"),
    (dict(path="examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz", format="hh_rlhf"), 300, "preference"),
    (dict(path="examples/data/hh-rlhf/kto-harmless-base-test-300.jsonl.gz", format="kto"), 300, "unpaired_feedback"),
    (dict(path="examples/data/tinyshakespeare/input_100k.txt", format="pretraining"), 741, "text"),
]


@pytest.mark.parametrize(("spec", "n", "kind"), SAMPLES, ids=[s[0]["path"].split("/")[2] + "-" + s[0]["format"] for s in SAMPLES])
def test_shipped_samples_load_completely(registry, spec, n, kind):
    spec = dict(spec, path=str(ROOT / spec["path"]))
    loaded = load_records(DatasetSpec(**spec), registry=registry, strict=False)
    assert loaded.errors == [] and loaded.n_rows == n and len(loaded.records) == n
    assert {r.kind for r in loaded.records} == {kind}
    assert (ROOT / spec["path"]).parent.joinpath("SOURCE.md").is_file()
    assert (ROOT / spec["path"]).parent.joinpath("LICENSE").is_file()


def test_hh_rlhf_real_rows_split_at_the_shared_prefix(registry):
    path = ROOT / "examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz"
    raw = [json.loads(line) for line in gzip.open(path, "rt")]
    loaded = load_records(DatasetSpec(path=str(path), format="hh_rlhf"), registry=registry)
    first = loaded.records[0]
    assert [m.content for m in first.prompt] == ["what are some pranks with a pen i can do?", "Are you looking for practical joke ideas?",
                                                 "yep", first.prompt[3].content, "okay some of these do not have anything to do with pens"]
    assert first.chosen[0].content.startswith("No, sorry!  All of these involve a pen")
    assert first.rejected[0].content.startswith("There are lots of funny things you can do with pens")
    for row, rec in zip(raw, loaded.records, strict=True):
        prefix = "".join(f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in rec.prompt)
        for side in ("chosen", "rejected"):
            tail = getattr(rec, side)
            assert tail[0].role == "assistant" and rec.prompt[-1].role == "user"
            rebuilt = prefix + "".join(f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in tail)
            assert " ".join(rebuilt.split()) == " ".join(row[side].split())
        assert rec.chosen != rec.rejected


def test_empty_files_give_no_rows(tmp_path, registry):
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "c.jsonl").write_text(_jsonl(ROWS[:1]))
    loaded = load_records(DatasetSpec(path=str(tmp_path), format="alpaca", field_map={"output": "output"}), registry=registry)
    assert loaded.records == EXPECTED[:1] and loaded.n_rows == 1 and len(loaded.files) == 3


def test_the_sample_readme_entries_load(monkeypatch, registry):
    import re

    import yaml

    block = re.search(r"```yaml\n(.*?)```", (ROOT / "examples/data/README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(ROOT)
    entries = yaml.safe_load(block)["datasets"]
    loaded = [load_records(DatasetSpec(**entry), registry=registry, strict=False) for entry in entries]
    assert [(x.format, x.errors, len(x.records)) for x in loaded] == [
        ("alpaca", [], 175), ("prompt_reference", [], 500), ("qa_json", [], 50), ("hh_rlhf", [], 300), ("kto", [], 300),
        ("pretraining", [], 741)]


# ---------------------------------------------------------------- places: 1-based file lines, UTF-8

LINES = {  # blank lines and multi-line rows: (text, line of the first row, line of the second, which has no 'text')
    "a.jsonl": ('{"text": "a"}\n\n\n   \n{"x": 1}\n', 1, 5),
    "a.json": ('[\n  {"text": "a"},\n\n  {\n    "x": 1\n  }\n]\n', 2, 4),
    "a.csv": ('text,x\n"two\nlines",1\n\n   \n,2\n', 2, 6),
    "a.tsv": ('text\tx\n\n"two\nlines"\t1\n\t2\n', 3, 5),
}


@pytest.mark.parametrize("name", [*LINES, "a.jsonl.gz", "a.csv.gz"])
def test_problems_and_records_name_the_1_based_file_line(tmp_path, registry, name):
    text, first, second = LINES[name.removesuffix(".gz")]
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    loaded = load_records(DatasetSpec(path=str(path), format="pretraining"), registry=registry, strict=False)
    assert loaded.errors == [f"{path}:{second}: field 'text': missing or null (hint: the row has columns: x; "
                             "rename with field_map: {<field>: <column>})"]
    assert loaded.where(0) == f"{path}:{first}"
    with pytest.raises(RecordError, match=re.escape(f"{path}:{second}: field 'text'")):
        load_records(DatasetSpec(path=str(path), format="pretraining"), registry=registry)


def test_rows_that_are_not_lines_fall_back_to_record_numbers(tmp_path, registry):
    path = tmp_path / "two.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"} {"x": 1}\n{"text": "d"}\n')  # pyarrow reads 4 rows from 3 lines
    loaded = load_records(DatasetSpec(path=str(path), format="pretraining"), registry=registry, strict=False)
    assert loaded.n_rows == 4 and loaded.errors[0].startswith(f"{path}: record 2 (0-based row): field 'text'")
    assert loaded.where(2) == f"{path}: record 3 (0-based row)"


@pytest.mark.parametrize("chunk", [3, 1 << 22])
def test_text_paragraphs_are_named_by_the_line_they_start_on(tmp_path, registry, monkeypatch, chunk):
    from oa_data import textfiles

    monkeypatch.setattr(textfiles, "CHUNK", chunk)  # paragraphs across read chunks
    path = tmp_path / "book.txt"
    path.write_text("First\nstill first.\n\n\n\nSecond.\n\n\n\n\nThird.\n")
    loaded = load_records(DatasetSpec(path=str(path), format="pretraining"), registry=registry)
    assert [r.text for r in loaded.records] == ["First\nstill first.", "Second.", "\nThird.\n"]
    assert [loaded.where(k) for k in range(3)] == [f"{path}:1", f"{path}:6", f"{path}:11"]


def test_files_without_lines_keep_0_based_record_numbers(tmp_path, registry):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": ""}]), str(path))
    loaded = load_records(DatasetSpec(path=str(path), format="pretraining"), registry=registry, strict=False)
    assert loaded.errors[0].startswith(f"{path}: record 1 (0-based row): field 'text'")
    assert loaded.where(0) == f"{path}: record 0 (0-based row)"


@pytest.mark.parametrize(("text", "expected"), [
    ('{"text": "a"}\n\n{"text": "b"} x\n{"text": "d"}\n', r":3:15: invalid JSON: Extra data"),
    ('{"text": "a"}\n{"text": "b",}\n', r":2:14: invalid JSON: Expecting property name enclosed in double quotes"),
    ('{"text": "a"}\n["b"]\n', r":2: expected one JSON object per line, got list"),
    ('[\n  {"text": "a"},\n  {"text": "b"},\n]\n', r":4:1: invalid JSON: Expecting value"),
], ids=["trailing data", "trailing comma", "not an object", "array"])
def test_malformed_json_names_line_and_column(tmp_path, registry, text, expected):
    path = tmp_path / ("bad.json" if text.startswith("[") else "bad.jsonl")
    path.write_text(text)
    with pytest.raises(OAError) as err:
        load_records(DatasetSpec(path=str(path), format="pretraining"), registry=registry, strict=False)
    assert re.match(re.escape(str(path)) + expected + r" \(hint: expected one JSON object per line", str(err.value))


NOT_UTF8 = {  # line 3 holds the only non-ASCII character
    "d.jsonl": '{"text": "a"}\n{"text": "b"}\n{"text": "caf\u00e9"}\n',
    "d.json": '[{"text": "a"},\n {"text": "b"},\n {"text": "caf\u00e9"}]\n',
    "d.csv": "text\nb\ncaf\u00e9\n",
    "d.txt": "a\n\ncaf\u00e9\n",
    "d.jsonl.gz": '{"text": "a"}\n{"text": "b"}\n{"text": "caf\u00e9"}\n',
}


@pytest.mark.parametrize("name", list(NOT_UTF8))
@pytest.mark.parametrize(("encode", "expected"), [
    (lambda text: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ":1: not UTF-8: byte 0x89 at byte offset 0 (invalid start byte)"),
    (lambda text: text.replace("\u00e9", "e").encode("utf-16"),
     ":1: not UTF-8: a UTF-16 byte-order mark at byte offset 0 (the file is UTF-16 text)"),
    (lambda text: text.encode("utf-16-le"), ":1: not UTF-8: a NUL byte at byte offset 1 (binary data, or UTF-16 text)"),
    (lambda text: text.encode("latin-1"), ":3: not UTF-8: byte 0xe9 at byte offset {offset} (invalid continuation byte)"),
], ids=["binary", "utf-16", "utf-16 without mark", "latin-1 byte in line 3"])
def test_data_that_is_not_utf8_names_line_and_byte_offset(tmp_path, registry, name, encode, expected):
    raw = encode(NOT_UTF8[name])
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with pytest.raises(OAError) as err:
        load_records(DatasetSpec(path=str(path), format="pretraining"), registry=registry, strict=False)
    where = " of the decompressed data" if name.endswith(".gz") else ""
    assert err.value.message == f"{path}" + expected.format(offset=raw.find(b"\xe9")) + where
    assert "UTF-8" in err.value.hint and "\n" not in str(err.value)


def test_the_utf8_check_reads_in_chunks_without_splitting_characters(tmp_path, monkeypatch):
    from oa_data import textfiles

    good = '{"text": "日本é"}\n\n{"text": "x"}\n'.encode()
    (tmp_path / "good.jsonl").write_bytes(good)
    (tmp_path / "bad.jsonl").write_bytes(good + b'{"text": "caf\xe9"}\n')
    for chunk in (1, 2, 3, 5, 1 << 22):
        monkeypatch.setattr(textfiles, "CHUNK", chunk)
        textfiles.check_utf8(tmp_path / "good.jsonl")
        with pytest.raises(OAError) as err:
            textfiles.check_utf8(tmp_path / "bad.jsonl")
        offset = len(good) + len(b'{"text": "caf')
        assert err.value.message == f"{tmp_path / 'bad.jsonl'}:4: not UTF-8: byte 0xe9 at byte offset {offset} (invalid continuation byte)"
