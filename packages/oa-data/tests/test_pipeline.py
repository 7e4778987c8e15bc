"""The whole data pipeline from a run config, and the `oa data` commands."""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from oa_cli.main import _add_plugin_commands, cli
from oa_core.config import load_config
from oa_data.packing import attention_mask_from_position_ids
from oa_data.pipeline import build_sft_datasets, prepare_split, preview_split
from oa_data.tokenizer import prepare_run_tokenizer

ROOT = Path(__file__).resolve().parents[3]
TOKENIZER = str(ROOT / "assets" / "tokenizers" / "llama2-sp")


def conversation(i, answer="Sure."):
    return {"messages": [{"role": "user", "content": f"Question number {i}?"}, {"role": "assistant", "content": answer}]}


def write_config(tmp_path, rows, **data):
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "method": "sft",
        "model": {"path": TOKENIZER},
        "datasets": [{"path": str(tmp_path / "chat.jsonl"), "format": "openai"}],
        "data": {"chat_template": "chatml", "max_length": 64, "cache_dir": str(tmp_path / "cache"), **data},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def tokenizer(raw_tokenizers):
    return raw_tokenizers["llama"]


def test_packed_split_is_cached_and_masks_never_cross_samples(tmp_path, tokenizer):
    rows = [conversation(i, "Yes. " * (i % 7 + 1)) for i in range(40)]
    cfg = load_config(write_config(tmp_path, rows, packing=True)).config
    first = prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), progress=False)
    assert not first.from_cache and first.report.supervision.samples == 40
    assert 0.5 < first.report.packing_efficiency <= 1.0
    total = 0
    for row in first.dataset:
        pos = row["position_ids"]
        starts = [k for k, p in enumerate(pos) if p == 0]
        mask = attention_mask_from_position_ids(pos)
        for a, b in zip(starts, starts[1:] + [len(pos)], strict=True):
            assert not mask[a:b, :a].any() and not mask[b:, a:b].any()
        total += len(starts)
    assert total == 40
    again = prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), progress=False)
    assert again.from_cache and again.cache_key == first.cache_key
    assert again.dataset["input_ids"] == first.dataset["input_ids"]
    assert any("loaded from the tokenized cache" in line for line in again.report.lines())


def test_cache_key_changes_with_data_and_options(tmp_path, tokenizer):
    def key(cfg):
        return prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), progress=False).cache_key

    path = write_config(tmp_path, [conversation(i) for i in range(5)])
    first = key(load_config(path).config)
    assert key(load_config(path, ["data.max_length=48"]).config) != first
    write_config(tmp_path, [conversation(i) for i in range(6)])
    assert key(load_config(path).config) != first


def test_unpacked_rows_supervise_only_answers(tmp_path, tokenizer):
    cfg = load_config(write_config(tmp_path, [conversation(0, "Blue sky.")])).config
    prepared = prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer))
    tok = prepared.tokenizer
    train, evaluation = build_sft_datasets(cfg, prepared, progress=False)
    assert evaluation is None and "position_ids" not in train.column_names
    labels = [t for t in train[0]["labels"] if t != -100]
    assert tok.decode(labels) == "Blue sky.<|im_end|>"


def test_whole_dataset_without_supervision_fails(tmp_path, tokenizer):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "train": False}]}]
    cfg = load_config(write_config(tmp_path, rows)).config
    with pytest.raises(Exception, match="supervised"):
        prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), use_cache=False, progress=False)


def test_truncation_counts_reported(tmp_path, tokenizer):
    rows = [conversation(i, "word " * 80) for i in range(3)] + [conversation(9)]
    cfg = load_config(write_config(tmp_path, rows, truncation="drop", max_drop_fraction=1.0)).config
    split = prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), use_cache=False, progress=False)
    (report,) = split.report.truncation.values()
    assert (report.dropped_too_long, report.kept) == (3, 1) and len(split.dataset) == 1
    (summary,) = split.report.datasets
    assert (summary.key, summary.rows, summary.taken, summary.kept, summary.dropped_too_long, summary.samples) == (
        "datasets.0", 4, 4, 1, 3, 1)
    assert summary.supervised == sum(sum(t != -100 for t in labels[1:]) + (labels[0] != -100)
                                     for labels in split.dataset["labels"])


def test_a_dataset_that_loses_too_many_records_stops_naming_it_and_the_knob(tmp_path, tokenizer):
    from oa_core.errors import OAError

    rows = [conversation(i, "word " * 80) for i in range(3)] + [conversation(i) for i in range(17)]
    path = write_config(tmp_path, rows, truncation="drop")  # 3 of 20 dropped: 15% > the default 5%
    cfg = load_config(path).config
    with pytest.raises(OAError) as e:
        prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), progress=False)
    assert str(e.value).startswith(f"datasets.0: 3 of 20 records of {tmp_path / 'chat.jsonl'} were lost (3 too long), "
                                   "15% > data.max_drop_fraction 0.05")
    assert "data.max_length" in e.value.hint
    allowed = load_config(path, ["data.max_drop_fraction=0.2"]).config  # the cached split, checked again
    split = prepare_split(allowed, prepare_run_tokenizer(allowed, copy.deepcopy(tokenizer)), progress=False)
    assert len(split.dataset) == 17 and split.report.datasets[0].dropped_too_long == 3
    again = prepare_split(allowed, prepare_run_tokenizer(allowed, copy.deepcopy(tokenizer)), progress=False)
    assert again.from_cache and again.report.datasets == split.report.datasets


@pytest.fixture(scope="module")
def runner():
    _add_plugin_commands()
    return CliRunner()


def test_data_validate_lists_every_bad_record_by_its_file_line(tmp_path, runner):
    rows = [conversation(0), {"messages": [{"role": "wizard", "content": "x"}]}, conversation(2),
            {"messages": [{"role": "user"}]}, {"messages": [{"role": "user", "content": "no answer"}]}]
    path = write_config(tmp_path, rows)
    data = tmp_path / "chat.jsonl"
    lines = data.read_text().splitlines(keepends=True)
    data.write_text(lines[0] + "\n" + "".join(lines[1:]))  # a blank line 2: rows 1..4 are on lines 3..6
    result = runner.invoke(cli, ["data", "validate", str(path)])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert [e.split(": ", 2)[1] for e in errors] == [f"{data}:3", f"{data}:5", f"{data}:6"]
    assert "field 'messages.0.role'" in errors[0] and "no token is supervised" in errors[2]  # a format, an encoding problem
    assert "5 rows read, 3 records encoded, 3 problem(s)" in result.stdout


def test_data_preview_and_stats(tmp_path, runner):
    path = write_config(tmp_path, [conversation(i, "Green.") for i in range(4)], packing=True)
    result = runner.invoke(cli, ["data", "preview", str(path), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("sample ") == 2 and "Green.<|im_end|>" in result.stdout
    result = runner.invoke(cli, ["data", "stats", str(path)])
    assert result.exit_code == 0, result.output
    assert "packing efficiency" in result.stdout and "supervised tokens" in result.stdout


def test_unchecked_long_samples_still_truncate_by_whole_turns(tmp_path, tokenizer):
    turns = []
    for k in range(6):
        turns += [{"role": "user", "content": f"Tell me fact {k}."}, {"role": "assistant", "content": f"Fact {k} is true."}]
    rows = [{"messages": turns}]
    cfg = load_config(write_config(tmp_path, rows, truncation="keep_end", mask_cross_check=0.0)).config
    prepared = prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer))
    tok = prepared.tokenizer
    split = prepare_split(cfg, prepared, use_cache=False, progress=False)
    (report,) = split.report.truncation.values()
    assert report.truncated == 1
    text = tok.decode(split.dataset[0]["input_ids"])
    assert text.startswith("<|im_start|>user\nTell me fact") and text.endswith("Fact 5 is true.<|im_end|>\n")
    assert "Fact 0 is true." not in text


def test_cross_check_sampling_is_spread_and_counted():
    from oa_data.pipeline import cross_checked

    assert all(cross_checked(k, 0.0) for k in range(64)) and not any(cross_checked(k, 0.0) for k in range(64, 500))
    assert sum(cross_checked(k, 0.1) for k in range(64, 1064)) == 100
    assert all(cross_checked(k, 1.0) for k in range(1000))


def test_unknown_template_name_is_a_config_error_naming_file_and_key(tmp_path):
    from oa_core.errors import ConfigError

    path = write_config(tmp_path, [conversation(0)], chat_template="chatmll")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}: data.chat_template: unknown chat template 'chatmll' (did you mean 'chatml'?)"]


def exchange(k, words=6):
    return [{"role": "user", "content": f"Question {k}: " + "tell me more " * words},
            {"role": "assistant", "content": f"Answer {k}: " + "here is more " * words}]


def test_preview_shows_exactly_the_samples_training_gets(tmp_path, tokenizer, runner):
    # llama-2 renders the system prompt inside the first user turn: cutting turns' tokens out would lose it
    system = {"role": "system", "content": "Answer like a pirate."}
    rows = [{"messages": [system, *exchange(0), *exchange(1), *exchange(2)]} for _ in range(3)]
    rows.append({"messages": [system, *exchange(9, 1)]})
    path = write_config(tmp_path, rows, chat_template="llama-2", max_length=90)
    cfg = load_config(path).config
    prepared = prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer))
    split = prepare_split(cfg, prepared, use_cache=False, progress=False)
    previewed = preview_split(cfg, prepared, "train", num=len(rows))
    assert [s.input_ids for f in previewed for s in f.samples] == split.dataset["input_ids"]
    assert [s.labels for f in previewed for s in f.samples] == split.dataset["labels"]
    (report,) = split.report.truncation.values()
    assert (report.truncated, report.kept) == (3, 1)
    assert all("<<SYS>>\nAnswer like a pirate." in prepared.tokenizer.decode(ids) for ids in split.dataset["input_ids"])
    result = runner.invoke(cli, ["data", "preview", str(path), "-n", str(len(rows))])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("<<SYS>>") == 4 and result.stdout.count("truncated (") == 3


def test_random_cut_ends_every_conversation_after_an_answer_drawn_from_the_run_seed(tmp_path, tokenizer):
    rows = [{"messages": [*exchange(3 * i, 1), *exchange(3 * i + 1, 1), *exchange(3 * i + 2, 1)]} for i in range(12)]
    path = write_config(tmp_path, rows, truncation="random_cut", max_length=512)

    def samples(*overrides):
        cfg = load_config(path, list(overrides)).config
        prepared = prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer))
        split = prepare_split(cfg, prepared, use_cache=False, progress=False)
        return [prepared.tokenizer.decode(ids) for ids in split.dataset["input_ids"]], split.report

    first, report = samples()
    (counts,) = report.truncation.values()
    assert counts.kept + counts.truncated == 12 and counts.truncated > 0 and counts.dropped == 0
    assert all(text.endswith(" here is more <|im_end|>\n") for text in first)  # after a whole answer
    assert samples()[0] == first
    assert sorted(samples("seed=7")[0]) != sorted(first)


def test_long_plain_text_is_chunked_by_default_and_counted(tmp_path, tokenizer):
    from oa_core.schema import Text
    from oa_data.tokenize import encode_text

    docs = ["A long document about rivers. " * 40, "A short one."]
    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cfg = {"method": "pretrain", "model": {"path": TOKENIZER},
           "datasets": [{"path": str(tmp_path / "text.jsonl"), "format": "pretraining"}],
           "data": {"max_length": 64, "cache_dir": str(tmp_path / "cache")}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    cfg = load_config(tmp_path / "run.yaml").config
    split = prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), use_cache=False, progress=False)
    ids = encode_text(Text(text=docs[0]), tokenizer).input_ids
    chunks = [ids[i:i + 64] for i in range(0, len(ids), 64)]  # Axolotl's completion chunking
    assert sorted(split.dataset["input_ids"]) == sorted([*chunks, encode_text(Text(text=docs[1]), tokenizer).input_ids])
    (report,) = split.report.truncation.values()
    assert (report.chunked, report.chunks, report.kept, report.dropped) == (1, len(chunks), 1, 0)
    assert any(f"1 chunked into {len(chunks)} pieces" in line for line in split.report.lines())


def test_a_truncation_rule_that_does_not_fit_the_format_is_a_config_error(tmp_path):
    from oa_core.errors import ConfigError

    path = write_config(tmp_path, [conversation(0)], truncation="chunk")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}: data.truncation: truncation 'chunk' splits plain text into pieces; conversations are cut by whole "
        "messages (keep_end, keep_start, random_cut, drop); format 'openai' of datasets.0 makes Conversation records"]


def test_a_record_failing_in_training_is_named_by_its_file_line(tmp_path, tokenizer):
    from oa_core.errors import RecordError

    path = write_config(tmp_path, [conversation(0), {"messages": [{"role": "user", "content": "no answer"}]}])
    data = tmp_path / "chat.jsonl"
    data.write_text(data.read_text().replace("\n", "\n\n", 1))  # the second row is on line 3
    cfg = load_config(path).config
    with pytest.raises(RecordError, match="^" + re.escape(f"{data}:3: no token is supervised")):
        prepare_split(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(tokenizer)), use_cache=False, progress=False)
