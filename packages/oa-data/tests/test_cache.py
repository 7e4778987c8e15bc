"""The tokenized-dataset cache: keys follow every input; entries are built once and saved atomically."""

import os

import datasets
import pytest

from oa_data import cache
from oa_data.cache import cache_path, cached, fingerprint


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "a"}\n')
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"model": 1}')
    (tok / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    return tmp_path


def key(root, **changes):
    args = {"files": [root / "data.jsonl"], "tokenizer_dir": root / "tok", "template_text": "{{ messages }}",
            "options": {"max_length": 512, "packing": False}} | changes
    return fingerprint(**args)


def test_key_is_stable_and_changes_with_every_input(inputs):
    base = key(inputs)
    assert base == key(inputs) and len(base) == 32
    assert key(inputs, options={"packing": False, "max_length": 512}) == base  # option order does not matter
    changed = [key(inputs, template_text="{{ messages }}!"), key(inputs, options={"max_length": 1024, "packing": False}),
               key(inputs, files=[inputs / "data.jsonl", inputs / "data.jsonl"]), key(inputs, tokenizer_dir=None)]
    (inputs / "data.jsonl").write_text('{"text": "b"}\n')
    changed.append(key(inputs))
    (inputs / "data.jsonl").write_text('{"text": "a"}\n')
    assert key(inputs) == base
    (inputs / "tok" / "tokenizer_config.json").write_text('{"eos_token": "<eos>"}')
    changed.append(key(inputs))
    (inputs / "tok" / "added_tokens.json").write_text("{}")
    changed.append(key(inputs))
    assert len({base, *changed}) == len(changed) + 1


def test_hub_names_enter_the_key_as_text(inputs):
    assert key(inputs, tokenizer_dir="org/model-a") != key(inputs, tokenizer_dir="org/model-b")


def test_cached_builds_once_then_hits(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]]})

    first = cached("k1", build, cache_dir=tmp_path)
    second = cached("k1", build, cache_dir=tmp_path)
    assert calls == [1]
    assert first["input_ids"] == second["input_ids"] == [[1, 2, 3], [4, 5]]
    assert cache_path("k1", tmp_path).is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["tokenized-k1"]  # no temp folders left behind
    cached("k2", build, cache_dir=tmp_path)
    assert calls == [1, 1]


def test_a_failed_build_or_save_leaves_no_entry(tmp_path, monkeypatch):
    def boom():
        raise RuntimeError("tokenizer crashed")

    with pytest.raises(RuntimeError):
        cached("k", boom, cache_dir=tmp_path)
    assert not cache_path("k", tmp_path).exists()

    def replace_fails(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(cache.os, "replace", replace_fails)
    with pytest.raises(PermissionError):
        cached("k", lambda: datasets.Dataset.from_dict({"x": [1]}), cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_entry_written_concurrently_wins(tmp_path, monkeypatch):
    real_replace = os.replace

    def racer(src, dst):  # another process finished the same key first
        datasets.Dataset.from_dict({"x": [9]}).save_to_disk(dst)
        real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", racer)
    out = cached("k", lambda: datasets.Dataset.from_dict({"x": [1]}), cache_dir=tmp_path)
    assert out["x"] == [9] and [p.name for p in tmp_path.iterdir()] == ["tokenized-k"]
