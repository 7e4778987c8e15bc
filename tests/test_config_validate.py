"""`oa config validate` checks every plugin name a config uses and the plugins' cross-section rules, before
any model or data is loaded: one line per problem naming the file and the key path, all at once, exit 2."""

from __future__ import annotations

import pytest
import yaml

from oa_cli.main import main


def _config(tmp_path, model_dir, **changes) -> str:
    (tmp_path / "train.jsonl").write_text('{"instruction": "Say hi.", "output": "Hi."}\n')
    doc = {"method": "sft", "output_dir": str(tmp_path / "out"), "model": {"path": model_dir},
           "tokenizer": {"path": "assets/tokenizers/llama2-sp"},
           "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca"}],
           "data": {"chat_template": "chatml", "max_length": 256}}
    for key, value in changes.items():
        node = doc
        *parents, last = key.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[last] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize(("change", "line"), [
    ({"data.chat_template": "chatmll"}, "data.chat_template: unknown chat template 'chatmll' (did you mean 'chatml'?)"),
    ({"datasets.0.format": "alpacca"}, "datasets.0.format: unknown dataset format 'alpacca' (did you mean 'alpaca'?)"),
    ({"model.patches": ["kernels.rop"]}, "model.patches.0: unknown model patch 'kernels.rop' (did you mean 'kernels.rope'?)"),
    ({"method": "sftt"}, "method: unknown method 'sftt' (did you mean 'sft'?)"),
    ({"data.packing": True, "data.max_length": 128, "datasets.0.max_length": 200},
     "datasets.0.max_length: 200 exceeds data.max_length 128, the length of a packed row"),
    ({"data.max_length": 4096}, "data.max_length: 4096 exceeds the model's 1024 positions"),
    ({"train.generation": {"num_samples": 2}}, "train.generation.num_samples: needs eval data"),
    ({"datasets.0.path": "data/missing.jsonl"}, "datasets.0.path: file not found ('data/missing.jsonl', relative to"),
    ({"model.path": "./no/such/model"}, "model.path: local model folder './no/such/model' not found"),
    ({"tokenizer.path": "./no/tokenizer"}, "tokenizer.path: local tokenizer folder './no/tokenizer' not found"),
    ({"model.adapter_path": "./no/adapter"}, "model.adapter_path: no adapter (adapter_config.json) in './no/adapter'"),
    ({"data.chat_template": None}, "data.chat_template: the tokenizer in 'assets/tokenizers/llama2-sp' has no chat template"),
    ({"train.report_to": ["mlflow"]}, "train.report_to: 'mlflow' is not installed (pip install mlflow"),
    ({"datasets.0.format": "hh_rlhf"}, "datasets.0.format: 'hh_rlhf' gives PreferencePair records, which method 'sft' "
     "does not train on"),
])
def test_a_misspelt_name_or_inconsistent_value_is_one_line_naming_file_and_key(tmp_path, capsys, repo_root, change, line,
                                                                              monkeypatch):
    monkeypatch.chdir(repo_root)
    path = _config(tmp_path, str(repo_root / "examples" / "models" / "tiny-llama"), **change)
    assert main(["config", "validate", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: {err[0].split(': ', 2)[2]}"] and line in err[0], err


def test_every_problem_is_reported_at_once(tmp_path, capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    path = _config(tmp_path, str(repo_root / "examples" / "models" / "tiny-llama"),
                   **{"data.chat_template": "chatmll", "datasets.0.format": "alpacca", "data.max_length": 4096})
    assert main(["config", "validate", path]) == 2
    err = capsys.readouterr().err
    assert all(f"{path}: {key}:" in err for key in ("data.chat_template", "datasets.0.format", "data.max_length"))
    assert "Traceback" not in err


def test_a_good_config_passes(tmp_path, capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    path = _config(tmp_path, str(repo_root / "examples" / "models" / "tiny-llama"))
    assert main(["config", "validate", path]) == 0, capsys.readouterr().err


def test_a_plugin_whose_check_raises_is_named_and_the_others_still_report(tmp_path, capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    from oa_core import hookimpl
    from oa_core.plugins import add_plugin, remove_plugin

    class Broken:
        @hookimpl
        def check_config(self, config):
            raise RuntimeError("boom")

    add_plugin(Broken(), "broken-check")
    try:
        path = _config(tmp_path, str(repo_root / "examples" / "models" / "tiny-llama"), **{"data.max_length": 4096})
        assert main(["config", "validate", path]) == 2
    finally:
        remove_plugin("broken-check")
    err = capsys.readouterr().err
    assert "plugin 'broken-check'" in err and "failed in check_config: RuntimeError: boom" in err
    assert "data.max_length: 4096 exceeds" in err


def test_every_shipped_example_config_validates(repo_root, capsys, monkeypatch):
    """Apart from experiment trackers the examples log to (installed where they run), every example is valid."""
    monkeypatch.chdir(repo_root)
    configs = [*sorted((repo_root / "examples").glob("*.yaml")), *sorted((repo_root / "examples" / "configs").glob("*.yaml"))]
    configs = [p for p in configs if not p.name.startswith("augment-")]  # oa augment configs: oa-augment runs them
    assert len(configs) >= 9
    for path in configs:
        code = main(["config", "validate", str(path)])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert all(": train.report_to: '" in line and "is not installed" in line for line in errors), errors
        assert code == (2 if errors else 0)
