"""The README's "train → merge → chat → eval" commands, run as written (fewer training steps, fewer eval records),
from a folder that has the repository's examples/ and assets/: each exits 0 and leaves what the README says."""

from __future__ import annotations

import io
import json
import re
import shlex

import pytest

from oa_cli.main import main

FASTER = {  # the commands' own arguments stay; these only make them quicker
    "examples/sft-tiny.yaml": ["train.max_steps=4", "train.eval_steps=2", "train.save_steps=2",
                               "train.logging_steps=2", "train.generation.num_samples=1",
                               "train.generation.max_new_tokens=4"],
    "examples/workflow/sft-tiny-lora.yaml": ["train.max_steps=2", "train.eval_steps=2", "train.save_steps=2",
                                    "train.logging_steps=1",
                                    "train.generation.num_samples=1", "train.generation.max_new_tokens=4"],
    "examples/workflow/eval-tiny.yaml": ["datasets.0.limit=3", "generation.max_new_tokens=6"],
}


def workflow_commands(readme: str) -> list[tuple[list[str], str | None]]:
    """``(oa arguments, stdin)`` of every line of the README's workflow block."""
    block = readme.split("<!-- workflow-commands -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        stdin = None
        if line.startswith("printf "):
            printf, _, line = line.partition("|")
            stdin = shlex.split(printf)[1].replace("\\n", "\n")
        words = shlex.split(line)
        assert words[0] == ".venv/bin/oa", line
        out.append((words[1:], stdin))
    return out


def test_train_merge_chat_eval_as_the_readme_shows(repo_root, tmp_path, monkeypatch, capsys):
    commands = workflow_commands((repo_root / "README.md").read_text(encoding="utf-8"))
    assert [c[0][0] for c in commands] == ["train", "train", "merge", "chat", "eval"]
    for name in ("examples", "assets"):
        (tmp_path / name).symlink_to(repo_root / name)
    monkeypatch.chdir(tmp_path)
    for args, stdin in commands:
        extra = [x for key in FASTER.get(args[1], []) for x in ("--set", key)] if args[0] in ("train", "eval") else []
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert main([*args, *extra]) == 0, args
        printed = capsys.readouterr()
        if args[0] == "chat":
            assert printed.out.count("user> ") == 2 and len(printed.out) > len("user> user> ")
    runs = tmp_path / "runs"
    assert (runs / "sft-tiny/model/config.json").is_file()
    assert (runs / "sft-tiny-lora/model/adapter_config.json").is_file()
    assert (runs / "sft-tiny-merged/config.json").is_file() and not (runs / "sft-tiny-merged/adapter_config.json").exists()
    report = json.loads((runs / "sft-tiny-eval/report.json").read_text())
    names = [r["checkpoint"] for r in report["checkpoints"]]
    assert names[-2:] == ["sft-tiny/model", "sft-tiny-merged"] and names[0].startswith("sft-tiny/checkpoint-")
    assert report["metrics"] == ["gsm8k/accuracy", "gsm8k/rouge1", "gsm8k/rouge2", "gsm8k/rougeL", "gsm8k/perplexity"]
    best = report["best"]
    assert best["metric"] == "gsm8k/perplexity" and best["mode"] == "min"
    assert best["value"] == min(r["metrics"]["gsm8k/perplexity"] for r in report["checkpoints"])
    assert f"best checkpoint by gsm8k/perplexity (min): {best['path']}" in printed.out
    for row in report["checkpoints"]:
        assert (runs / "sft-tiny-eval" / row["checkpoint"] / "gsm8k.generations.jsonl").is_file()


@pytest.mark.parametrize("line,want", [
    ("printf 'a\\nb\\n' | .venv/bin/oa chat --model M   # note", (["chat", "--model", "M"], "a\nb\n")),
    (".venv/bin/oa eval x.yaml", (["eval", "x.yaml"], None)),
])
def test_workflow_lines_parse(line, want):
    assert workflow_commands(f"<!-- workflow-commands -->\n```bash\n{line}\n```\n") == [want]
