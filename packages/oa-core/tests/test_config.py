import types

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from oa_core import hookimpl
from oa_core.config import json_schema, load_config, redact, write_effective_config
from oa_core.errors import ConfigError
from oa_core.extensions import Method


class ToyTrain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = 1e-4
    epochs: int = 1
    hub_token: str | None = None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: int = 0


@pytest.fixture
def registry(make_manager):
    plug = types.SimpleNamespace(
        register_methods=hookimpl(lambda register: register("toy", Method(ToyTrain, objective=lambda: None))),
        register_config_sections=hookimpl(lambda register: register("extra", Section)),
    )
    return make_manager(plug).registry()


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


GOOD = {"method": "toy", "model": {"path": "m"}, "datasets": [{"path": "d.jsonl", "format": "oa.conversation"}]}


def problems(path, registry, overrides=()):
    with pytest.raises(ConfigError) as e:
        load_config(path, list(overrides), registry=registry)
    return e.value.problems


def test_valid_config_and_defaults(tmp_path, registry):
    loaded = load_config(write(tmp_path / "run.yaml", GOOD), registry=registry)
    assert loaded.config.train.learning_rate == 1e-4
    assert loaded.sources["model.path"].endswith("run.yaml")
    assert loaded.sources["train.learning_rate"] == "default"


def test_every_problem_listed_with_file_and_key(tmp_path, registry):
    cfg = dict(GOOD, train={"learning_rat": 1, "epochs": "many"}, seeed=3)
    out = problems(write(tmp_path / "run.yaml", cfg), registry)
    joined = "\n".join(out)
    assert f"{tmp_path / 'run.yaml'}: train.learning_rat: unknown key (did you mean 'learning_rate'?)" in out
    assert f"{tmp_path / 'run.yaml'}: seeed: unknown key (did you mean 'seed'?)" in out
    assert "train.epochs: Input should be a valid integer" in joined
    assert len(out) == 3


def test_unknown_method_and_format(tmp_path, registry):
    out = problems(write(tmp_path / "a.yaml", dict(GOOD, method="toyy")), registry)
    assert out == [f"{tmp_path / 'a.yaml'}: method: unknown method 'toyy' (did you mean 'toy'?)"]
    bad = dict(GOOD, datasets=[{"path": "x", "format": "oa.conversatoin"}])
    out = problems(write(tmp_path / "b.yaml", bad), registry)
    assert out == [f"{tmp_path / 'b.yaml'}: datasets.0.format: unknown dataset format 'oa.conversatoin' (did you mean 'oa.conversation'?)"]


def test_include_overrides_and_provenance(tmp_path, registry):
    write(tmp_path / "base.yaml", {"method": "toy", "model": {"path": "base-model"}, "train": {"epochs": 3}})
    write(tmp_path / "run.yaml", "include: base.yaml\ntrain:\n  learning_rate: 0.5\n")
    loaded = load_config(tmp_path / "run.yaml", ["train.epochs=7", "extra.level=2"], registry=registry)
    cfg = loaded.config
    assert (cfg.model.path, cfg.train.epochs, cfg.train.learning_rate, cfg.extra.level) == ("base-model", 7, 0.5, 2)
    assert loaded.sources["model.path"].endswith("base.yaml")
    assert loaded.sources["train.learning_rate"].endswith("run.yaml")
    assert loaded.sources["train.epochs"] == "--set"


def test_problem_in_included_file_names_that_file(tmp_path, registry):
    write(tmp_path / "base.yaml", {"method": "toy", "model": {"path": "m", "dtyp": "bf16"}})
    write(tmp_path / "run.yaml", {"include": "base.yaml"})
    out = problems(tmp_path / "run.yaml", registry)
    assert out == [f"{tmp_path / 'base.yaml'}: model.dtyp: unknown key (did you mean 'dtype'?)"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("method: toy\nmodel: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("include: missing.yaml\nmethod: toy\n", "include: 'missing.yaml' not found"),
        ("include: run.yaml\nmethod: toy\n", "include: cycle"),
        ("model: {path: m}\n", "method: required key is missing"),
        ("method: toy\ndatasets: [{path: a, format: oa.text, sample_rate: 0.5, num_samples: 3}]\n", "at most one of 'sample_rate' and 'num_samples'"),
        ("method: toy\nmodel: {path: m, dtype: fp8}\n", "model.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
    ],
)
def test_broken_files_give_one_line(tmp_path, registry, text, expected):
    out = problems(write(tmp_path / "run.yaml", text), registry)
    assert len(out) == 1 and expected in out[0] and "\n" not in out[0]


def test_missing_file_and_bad_override(tmp_path, registry):
    assert problems(tmp_path / "nope.yaml", registry) == [f"{tmp_path / 'nope.yaml'}: config file not found"]
    path = write(tmp_path / "run.yaml", GOOD)
    assert "expected key.path=value" in problems(path, registry, ["train.epochs"])[0]
    assert problems(path, registry, ["train.epochs=abc"])[0].endswith('train.epochs: Input should be a valid integer, unable to parse string as an integer (got "abc")')


def test_json_config(tmp_path, registry):
    import json

    (tmp_path / "run.json").write_text(json.dumps(GOOD))
    assert load_config(tmp_path / "run.json", registry=registry).config.method == "toy"
    (tmp_path / "bad.json").write_text('{"method": "toy",}')
    assert "invalid JSON" in problems(tmp_path / "bad.json", registry)[0]


CONFIG_TEXT = {"run.yaml": "method: toy\nmodel: {path: m}\n# caf\u00e9\n", "run.json": '{"method": "toy",\n"model": {},\n"x": "caf\u00e9"}'}


@pytest.mark.parametrize("name", sorted(CONFIG_TEXT))
@pytest.mark.parametrize(("encode", "expected"), [
    (lambda text: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ":1: not UTF-8: byte 0x89 at byte offset 0 (invalid start byte)"),
    (lambda text: text.encode("utf-16"), ":1: not UTF-8: a UTF-16 byte-order mark at byte offset 0 (the file is UTF-16 text)"),
    (lambda text: text.encode("latin-1"), ":3: not UTF-8: byte 0xe9 at byte offset {offset} (invalid continuation byte)"),
], ids=["binary", "utf-16", "latin-1 byte in line 3"])
def test_config_that_is_not_utf8_names_line_and_byte_offset(tmp_path, registry, name, encode, expected):
    raw = encode(CONFIG_TEXT[name])
    (tmp_path / name).write_bytes(raw)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / name, registry=registry)
    assert e.value.problems == [f"{tmp_path / name}" + expected.format(offset=raw.find(b"\xe9"))]
    assert "UTF-8" in e.value.hint and "\n" not in str(e.value)


def test_schema_contains_plugin_sections_and_methods(registry):
    schema = json_schema(registry)
    assert "extra" in schema["properties"] and "include" in schema["properties"]
    assert "ToyTrain" in schema["$defs"]
    assert schema["additionalProperties"] is False


def test_effective_config_written_atomically_with_secrets_redacted(tmp_path, registry):
    cfg = dict(GOOD, train={"hub_token": "hf_abcdefghijklmnop"}, model={"path": "m", "model_kwargs": {"api_key": "x", "pad_token": "<pad>"}})
    loaded = load_config(write(tmp_path / "run.yaml", cfg), ["seed=3"], registry=registry)
    out = write_effective_config(loaded, tmp_path / "out")
    doc = yaml.safe_load(out.read_text())
    assert doc["config"]["train"]["hub_token"] == "***"
    assert doc["config"]["model"]["model_kwargs"] == {"api_key": "***", "pad_token": "<pad>"}
    assert doc["sources"]["seed"] == "--set" and doc["config"]["seed"] == 3
    assert "hf_abcdefghijklmnop" not in out.read_text()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["effective_config.yaml"]


def test_redact_keeps_token_counts():
    assert redact({"max_tokens": 5, "eos_token": "</s>", "wandb_api_key": "k", "note": "sk-abcdefghijkl"}) == {
        "max_tokens": 5, "eos_token": "</s>", "wandb_api_key": "***", "note": "***"}


def test_atomic_write_gives_usual_permissions(tmp_path):
    import os

    from oa_core.io import atomic_write_text

    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "f.txt", "x")
    finally:
        os.umask(umask)
    assert path.read_text() == "x" and (path.stat().st_mode & 0o777) == 0o644


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    import pytest as _pytest

    from oa_core.io import atomic_dir, atomic_open

    target = tmp_path / "out"
    with _pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with atomic_dir(target) as tmp:  # overwrite: the new folder replaces the old one
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    with atomic_dir(target, overwrite=False) as tmp:  # keep: another writer finished first
        (tmp / "c.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with _pytest.raises(RuntimeError), atomic_open(tmp_path / "f.jsonl") as f:
        f.write("partial\n")
        raise RuntimeError("interrupted stream")
    assert not (tmp_path / "f.jsonl").exists()
