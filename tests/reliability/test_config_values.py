"""Config values that parse but must not pass: non-finite numbers, out-of-range betas, a key given twice; a
YAML alias bomb is refused at once instead of being expanded; a self-referencing alias is one line."""

from __future__ import annotations

import time

import pytest

from oa_cli.main import main


def _validate(tmp_path, capsys, text: str, name: str = "run.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    assert main(["config", "validate", str(path)]) == 2
    return [line.replace(str(path), "FILE") for line in capsys.readouterr().err.strip().splitlines()]


@pytest.mark.parametrize(("text", "line"), [
    ("method: sft\ntrain: {learning_rate: .inf}\n", "error: FILE: train.learning_rate: must be a finite number (got inf)"),
    ("method: sft\ntrain: {max_grad_norm: .nan}\n", "error: FILE: train.max_grad_norm: must be a finite number (got nan)"),
    ("method: sft\ntrain: {adam_betas: [2, 0.9]}\n", "error: FILE: train.adam_betas.0: Input should be less than 1 (got 2)"),
    ("method: sft\nseed: 1\ntrain: {}\nseed: 2\n", "error: FILE:4: duplicate key 'seed' (first given at line 2) "
     "(hint: give every key once)"),
    ("method: sft\ntrain:\n  learning_rate: 1.0e-4\n  learning_rate: 2.0e-4\n",
     "error: FILE:4: duplicate key 'learning_rate' (first given at line 3) (hint: give every key once)"),
    ("method: sft\nx: &x [*x]\n", "error: FILE: a YAML alias refers to the value that contains it (hint: write the value "
     "out instead of the self-reference)"),
])
def test_a_value_that_must_not_pass_is_one_line(tmp_path, capsys, text, line):
    assert line in _validate(tmp_path, capsys, text)


def test_duplicate_keys_in_json(tmp_path, capsys):
    assert _validate(tmp_path, capsys, '{"method": "sft", "seed": 1, "seed": 2}', "run.json") == [
        "error: FILE: duplicate key 'seed' (hint: give every key once)"]


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path, capsys):
    lines = ["method: sft", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    start = time.perf_counter()
    err = _validate(tmp_path, capsys, "\n".join(lines) + "\n")
    assert time.perf_counter() - start < 5  # 9**12 values if expanded
    assert len(err) == 1 and "expands to" in err[0] and "values through YAML aliases (at most 100,000)" in err[0]


def test_anchors_within_bounds_still_work(tmp_path, capsys):
    text = ("method: sft\ndefaults: &d {learning_rate: 1.0e-4, max_steps: 3}\ntrain:\n  <<: *d\n  max_steps: 5\n"
            "model: {path: m}\n")
    (tmp_path / "ok.yaml").write_text(text.replace("defaults:", "x_defaults:"))
    assert main(["config", "validate", str(tmp_path / "ok.yaml")]) == 2  # x_defaults is an unknown key, nothing else
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x_defaults: unknown key" in err[0]
