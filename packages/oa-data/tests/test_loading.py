"""Reading sources: file types, compression, folders, hub ids, strict and collecting modes, readers."""

import gzip
import json
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
    with pytest.raises(OAError, match=r"bad\.jsonl: cannot read as json: .*hint: expected one JSON object per line") as err:
        load_records(DatasetSpec(path=str(tmp_path / "bad.jsonl"), format="alpaca"), registry=registry)
    assert "\n" not in str(err.value)
    with pytest.raises(OAError, match="unknown dataset format 'alpacca' \\(did you mean 'alpaca'\\?\\)"):
        load_records(DatasetSpec(path=str(tmp_path / "bad.jsonl"), format="alpacca"), registry=registry)


def test_collecting_mode_checks_every_row_and_keeps_the_good_ones(tmp_path, registry):
    rows = [ROWS[0], {"instruction": "x"}, ROWS[1], {"input": "y", "output": "z"}, ROWS[2]]
    path = tmp_path / "mixed.jsonl"
    path.write_text(_jsonl(rows))
    spec = DatasetSpec(path=str(path), format="alpaca")
    with pytest.raises(RecordError, match=r"mixed\.jsonl: record 1 \(0-based row\): field 'output': missing or null"):
        load_records(spec, registry=registry)
    loaded = load_records(spec, registry=registry, strict=False)
    assert loaded.records == EXPECTED[:3] and loaded.n_rows == 5 and loaded.n_invalid == 2
    assert loaded.errors[0].startswith(f"{path}: record 1 (0-based row): field 'output': missing or null (hint: ")
    assert loaded.errors[1].startswith(f"{path}: record 3 (0-based row): field 'instruction': missing or null")


def test_num_proc_gives_the_same_records_and_errors(tmp_path, registry):
    rows = [{"text": f"line {i}" if i % 997 else ""} for i in range(2500)]
    path = tmp_path / "big.jsonl"
    path.write_text(_jsonl(rows))
    spec = DatasetSpec(path=str(path), format="pretraining")
    serial = load_records(spec, registry=registry, strict=False)
    parallel = load_records(spec, registry=registry, strict=False, num_proc=2)
    assert parallel.records == serial.records and len(serial.records) == 2497
    assert parallel.errors == serial.errors and serial.errors[1].startswith(f"{path}: record 997 (0-based row): field 'text'")
    with pytest.raises(RecordError, match=r"record 0 \(0-based row\): field 'text'"):
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
    assert loaded.n_rows == 3 and loaded.errors == [f"{tmp_path / 't.jsonl'}: record 2 (0-based row): field 'text': String "
                                                    "should have at least 1 character (hint: format 'split' makes Text records)"]

    def buggy(row):
        return {"text": row["text"].upper()} if row["text"] != "c" else row.nope

    reg = _registry_with("buggy", DatasetFormat(Text, buggy, ("text",)))
    loaded = load_records(DatasetSpec(path=str(tmp_path / "t.jsonl"), format="buggy"), registry=reg, strict=False)
    assert loaded.records == [Text(text="A|B"), Text(text="D||E")]
    assert loaded.errors == [f"{tmp_path / 't.jsonl'}: record 1 (0-based row): format 'buggy' failed: AttributeError: 'dict' "
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
        ("alpaca", [], 175), ("prompt_reference", [], 500), ("qa_json", [], 50), ("hh_rlhf", [], 300), ("pretraining", [], 741)]
