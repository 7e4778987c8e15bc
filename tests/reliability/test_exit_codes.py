"""Every `oa` command: 0 when it worked, 2 for a user error (one line), 2 for a bad flag, 0 for --help. A
command that finds problems in the data exits 2 (`oa data validate` used to exit 0)."""

from __future__ import annotations

import json

import pytest
import yaml

from oa_cli.main import main


@pytest.fixture
def data_config(tmp_path, repo_root):
    def make(rows) -> str:
        (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        doc = {"method": "sft", "model": {"path": str(repo_root / "assets" / "tokenizers" / "llama2-sp")},
               "datasets": [{"path": str(tmp_path / "chat.jsonl"), "format": "openai"}],
               "data": {"chat_template": "chatml", "max_length": 64, "cache_dir": str(tmp_path / "cache")}}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
        return str(tmp_path / "run.yaml")

    return make


GOOD = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}]
BAD = GOOD + [{"messages": [{"role": "wizard", "content": "x"}]}]


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["plugins", "list"], ["plugins", "list", "--json"],
                                  ["config", "schema"], ["data", "--help"], ["train", "--help"]])
def test_commands_that_work_exit_0(args, capsys):
    assert main(args) == 0, capsys.readouterr().err


@pytest.mark.parametrize("args", [["nope"], ["plugins", "list", "--kind", "nope"], ["config", "validate"],
                                  ["config", "validate", "missing.yaml"], ["train", "missing.yaml"],
                                  ["train", "x.yaml", "--num-processes", "0"], ["data", "stats", "missing.yaml"]])
def test_user_errors_and_bad_flags_exit_2_with_one_line(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_data_commands_exit_2_when_they_find_problems_and_0_when_not(data_config, capsys):
    good = data_config(GOOD)
    for command in ("validate", "preview", "stats"):
        assert main(["data", command, good]) == 0, capsys.readouterr().err
    bad = data_config(BAD)
    assert main(["data", "validate", bad]) == 2
    out = capsys.readouterr()
    assert "1 problem(s)" in out.out and "chat.jsonl:2: field 'messages.0.role'" in out.err


def test_config_commands(data_config, tmp_path, capsys):
    good = data_config(GOOD)
    assert main(["config", "validate", good]) == 0
    assert main(["config", "show", good]) == 0
    assert main(["config", "validate", good, "--set", "data.max_length=4"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["config", "schema", "-o", str(tmp_path / "file" / "schema.json")]) == 2  # a file where a folder must be
    assert "is a file, but a folder is needed there" in capsys.readouterr().err
