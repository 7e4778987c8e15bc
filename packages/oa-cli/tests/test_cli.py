import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

import oa_core.config
import oa_core.plugins
from oa_cli.main import main
from oa_core import hookimpl
from oa_core.extensions import DatasetFormat, Method
from oa_core.plugins import PluginManager
from oa_core.schema import Text


class ToyTrain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = 1e-4


@pytest.fixture
def registry(monkeypatch):
    """The real installed plugins plus a `toy` method and a plugin that duplicates a format name."""
    dup = types.SimpleNamespace(
        register_methods=hookimpl(lambda register: register("toy", Method(ToyTrain, objective=lambda: None))),
        register_dataset_formats=hookimpl(lambda register: register("example.gsm8k", DatasetFormat(Text, dict))),
    )
    pm = PluginManager()
    pm.register(dup, "dup-plugin")
    reg = pm.registry()
    monkeypatch.setattr(oa_core.config.validate, "get_registry", lambda: reg)
    monkeypatch.setattr(oa_core.plugins, "get_registry", lambda: reg)
    return reg


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


GOOD = "method: toy\nmodel: {path: m}\ndatasets:\n  - {path: d.jsonl, format: oa.conversation}\n"
BROKEN = {
    "unknown_key": ("method: toy\nmodle: {path: m}\n", "modle: unknown key (did you mean 'model'?)"),
    "nested_unknown_key": ("method: toy\ntrain: {learning_rat: 1}\n", "train.learning_rat: unknown key (did you mean 'learning_rate'?)"),
    "wrong_type": ("method: toy\nseed: many\n", "seed: Input should be a valid integer"),
    "bad_yaml": ("method: toy\nmodel: {path: m\n", "invalid YAML"),
    "not_mapping": ("just a string\n", "top level must be a mapping"),
    "missing_method": ("model: {path: m}\n", "method: required key is missing"),
    "unknown_method": ("method: sfft_nope\n", "method: unknown method 'sfft_nope'"),
    "unknown_format": ("method: toy\ndatasets: [{path: a, format: alpacca_x}]\n", "datasets.0.format: unknown dataset format 'alpacca_x'"),
    "duplicate_plugin_name": ("method: toy\ndatasets: [{path: a, format: example.gsm8k}]\n",
                              "dataset format 'example.gsm8k' is registered by both 'example' (oa-plugin-example) and 'dup-plugin'"),
    "missing_include": ("include: base.yaml\nmethod: toy\n", "include: 'base.yaml' not found"),
    "bad_enum": ("method: toy\nmodel: {path: m, type: seq2seq}\n", "model.type: Input should be 'causal' or 'seq_cls'"),
    "negative_rate": ("method: toy\ndatasets: [{path: a, format: oa.text, sample_rate: -1}]\n", "datasets.0.sample_rate: Input should be greater than 0"),
    "plugin_section": ("method: toy\nexample: {tolerance: -1}\n", "example.tolerance: Input should be greater than or equal to 0"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_config_one_line_exit_2(tmp_path, capsys, registry, name):
    text, expected = BROKEN[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    code, out, err = run(capsys, "config", "validate", str(path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}") and expected in lines[0]
    assert "Traceback" not in err


def test_missing_config_file(tmp_path, capsys, registry):
    code, _, err = run(capsys, "config", "validate", str(tmp_path / "none.yaml"))
    assert code == 2 and err.strip() == f"error: {tmp_path / 'none.yaml'}: config file not found (hint: check the path)"


def test_valid_config_and_set(tmp_path, capsys, registry, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text("")  # data paths are checked
    path = tmp_path / "run.yaml"
    path.write_text(GOOD)
    code, out, _ = run(capsys, "config", "validate", str(path), "--set", "train.learning_rate=0.1")
    assert code == 0 and "ok (method toy, 1 dataset(s)" in out
    code, out, _ = run(capsys, "config", "show", str(path), "--set", "seed=5")
    assert code == 0 and "seed: 5" in out and "seed: --set" in out


def test_plugins_list_shows_builtins_and_example(capsys, registry):
    code, out, _ = run(capsys, "plugins", "list", "--json")
    rows = json.loads(out)["plugins"]
    by_name = {(r["name"], r["provider"]): r for r in rows}
    assert by_name[("oa.conversation", "oa-core")]["kind"] == "dataset_format"
    assert by_name[("example.numeric_answer", "oa-plugin-example")]["kind"] == "reward_function"
    assert by_name[("example.gsm8k", "dup-plugin")]["status"] == "duplicate"
    code, out, _ = run(capsys, "plugins", "list")
    assert code == 0 and "example.numeric_answer" in out and "oa-plugin-example" in out


def test_schema_includes_plugin_options(capsys, registry):
    code, out, _ = run(capsys, "config", "schema")
    schema = json.loads(out)
    assert code == 0 and "example" in schema["properties"] and "ToyTrain" in schema["$defs"]


def test_usage_errors_are_one_line(capsys, registry):
    code, _, err = run(capsys, "nope")
    assert code == 2 and err.strip() == "error: No such command 'nope'. (see 'oa --help')"
    code, _, err = run(capsys, "plugins", "list", "--kind", "wat")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown kind 'wat'" in err


def test_broken_plugin_does_not_kill_other_commands(tmp_path):
    """A plugin whose import fails is reported by name; `oa --version` and `plugins list` still work."""
    site = tmp_path / "site"
    dist = site / "brokenplug-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[oa]\nbrokenplug = brokenplug_mod\n")
    (site / "brokenplug_mod.py").write_text("raise ImportError('needs a library that is missing')\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    oa = [sys.executable, "-m", "oa_cli.main"]
    res = subprocess.run([*oa, "--version"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout.startswith("oa ")
    assert "plugin 'brokenplug' (brokenplug) failed" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([*oa, "plugins", "list", "--json"], capture_output=True, text=True, env=env)
    doc = json.loads(res.stdout)
    assert any("brokenplug" in b and "needs a library" in b for b in doc["broken"])
    assert any(r["name"] == "example.numeric_answer" for r in doc["plugins"])


def test_installed_oa_script(tmp_path):
    oa = Path(sys.executable).parent / "oa"
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [\n")
    res = subprocess.run([str(oa), "config", "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "invalid YAML" in res.stderr


def test_a_launched_worker_ends_without_interpreter_shutdown(tmp_path):
    """A worker that `oa train --num-processes N` started (OA_ERROR_FILE set) ends with os._exit once its command
    returns: its output flushed and its exit code kept, but no interpreter shutdown, where the gloo/NCCL threads DDP
    leaves behind can abort a finished run (SIGABRT)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import atexit\natexit.register(print, 'interpreter shutdown')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    worker = {**env, "OA_ERROR_FILE": str(tmp_path / "error")}
    oa = [sys.executable, "-m", "oa_cli.main"]
    plain = subprocess.run([*oa, "--version"], capture_output=True, text=True, env=env)
    assert plain.returncode == 0 and plain.stdout.splitlines()[-1] == "interpreter shutdown"
    res = subprocess.run([*oa, "--version"], capture_output=True, text=True, env=worker)
    assert res.returncode == 0 and res.stdout.splitlines() == plain.stdout.splitlines()[:-1]
    res = subprocess.run([*oa, "config", "validate", str(tmp_path / "missing.yaml")], capture_output=True, text=True,
                         env=worker)
    assert res.returncode == 2 and "missing.yaml" in (tmp_path / "error.0").read_text()
    assert "interpreter shutdown" not in res.stdout


@pytest.fixture
def typo_plugin():
    """A plugin added to this process whose `register_reward_function` misspells `register_reward_functions`."""
    typo = types.SimpleNamespace(
        register_reward_function=hookimpl(lambda register: None),
        register_dataset_formats=hookimpl(lambda register: register("typo.text", DatasetFormat(Text, dict))),
    )
    oa_core.plugins.add_plugin(typo, "typo")
    yield
    oa_core.plugins.remove_plugin("typo")


def test_a_misspelt_hook_is_a_warning_and_broken_in_plugins_list(capsys, typo_plugin):
    expected = ("plugin 'typo' (typo) failed in register_reward_function: no hook has this name, so oa never calls "
                "it (did you mean 'register_reward_functions'?)")
    code, out, err = run(capsys, "plugins", "list")
    assert code == 0 and err.splitlines() == [f"warning: {expected}"]
    assert f"\nbroken: {expected}\n" in out
    assert "example.numeric_answer" in out and "typo.text" in out  # the others, and its own other hooks, work
    code, out, _ = run(capsys, "plugins", "list", "--json")
    assert json.loads(out)["broken"] == [expected]
    code, out, _ = run(capsys, "env", "--json")
    assert json.loads(out)["broken"] == [expected]


def test_a_misspelt_hook_of_an_installed_plugin(tmp_path):
    site = tmp_path / "site"
    dist = site / "typoplug-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: typoplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[oa]\ntypoplug = typoplug_mod\n")
    (site / "typoplug_mod.py").write_text(
        "from oa_core import hookimpl\n\n@hookimpl\ndef register_chat_template(register):\n    pass\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "oa_cli.main", "plugins", "list", "--json"], capture_output=True,
                         text=True, env=env)
    assert res.returncode == 0
    assert res.stderr == ("warning: plugin 'typoplug' (typoplug) failed in register_chat_template: no hook has this "
                          "name, so oa never calls it (did you mean 'register_chat_templates'?)\n")
    doc = json.loads(res.stdout)
    assert doc["broken"] == [res.stderr.removeprefix("warning: ").strip()]
    assert any(r["name"] == "example.numeric_answer" for r in doc["plugins"])


def test_env_names_the_oa_packages_plugins_and_libraries(capsys):
    from importlib import metadata

    code, out, _ = run(capsys, "env", "--json")
    info = json.loads(out)
    assert code == 0
    assert {"oa-core", "oa-command"} <= set(info["packages"])
    assert {"name": "example", "distribution": "oa-plugin-example",
            "version": metadata.version("oa-plugin-example")} in info["plugins"]
    code, text, _ = run(capsys, "env")
    assert code == 0 and text.startswith(f"oa {info['oa']}\n")
    for name, version in info["packages"].items():
        assert f"  {name:<20} {version}\n" in text
    assert "example" in text and "oa-plugin-example" in text
    for name, version in info["libraries"].items():
        assert f"  {name:<20} {version or 'not installed'}\n" in text


def test_env_with_torch_shows_how_torch_was_built(capsys):
    torch = pytest.importorskip("torch")
    from importlib import metadata

    code, out, _ = run(capsys, "env", "--json")
    info = json.loads(out)
    assert info["libraries"]["torch"] == metadata.version("torch")
    assert info["gpu"]["cuda_build"] == torch.version.cuda and info["gpu"]["available"] == torch.cuda.is_available()
    code, text, _ = run(capsys, "env")
    gpu = text.split("\ngpu\n", 1)[1]
    expected = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    assert f"  {'torch':<20} {expected}\n" in gpu
    assert gpu.count("  cuda:") == info["gpu"]["count"]
