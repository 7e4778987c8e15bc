"""`oa data validate` and `preview` encode each record as the method of the config does: pairs and rankings for reward
models and preference optimisation, labelled inputs for classification; `stats` refuses data that is not SFT's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from oa_cli.main import main

TOKENIZER = str(Path(__file__).resolve().parents[3] / "assets" / "tokenizers" / "llama2-sp")


@pytest.mark.parametrize(("method", "fmt", "records", "problem"), [
    ("dpo", "preference", [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."},
                           {"prompt": "Hi?", "chosen": "Hello.", "rejected": [{"role": "user", "content": "x"}]}],
     ":2"),
    ("rm", "ranked", [{"prompt": "Name a colour.", "replies": ["Green.", "Blue.", "A."]},
                      {"prompt": "Name one.", "replies": ["One.", [{"role": "user", "content": "x"}]]}], ":2"),
    ("classification", "classification", [{"text": "fine", "label": 1},
                                          {"messages": [{"role": "wizard", "content": "x"}], "label": 0}], ":2"),
])
def test_validate_checks_records_the_way_their_method_encodes_them(tmp_path, capsys, method, fmt, records, problem):
    data = tmp_path / f"{fmt}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tmp_path / "run.yaml"
    train = {"num_labels": 2} if method == "classification" else {}
    config.write_text(yaml.safe_dump({
        "method": method, "model": {"path": TOKENIZER, "type": "causal" if method == "dpo" else "seq_cls"}, "datasets": [{"path": str(data), "format": fmt}],
        "data": {"chat_template": "chatml", "cache_dir": str(tmp_path / "cache")}, "train": train}))
    code = main(["data", "validate", str(config)])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and problem in errors[0], err
    assert "cannot be encoded for supervised training" not in err
    assert "2 rows read" in out and "1 problem(s)" in out


def test_preview_shows_prompt_and_replies_and_stats_refuses_non_sft_data(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Name a colour.", "chosen": "Green.", "rejected": "Loud."}) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "method": "dpo", "model": {"path": TOKENIZER}, "datasets": [{"path": str(data), "format": "preference"}],
        "data": {"chat_template": "chatml", "cache_dir": str(tmp_path / "cache")}}))
    assert main(["data", "preview", str(config)]) == 0
    out = capsys.readouterr().out
    prompt, first, second = out.split("prompt, ")[1], out.split("reply 1, ")[1], out.split("reply 2, ")[1]
    assert "Name a colour." in prompt.split("reply 1")[0] and "Green.<|im_end|>" in first.split("reply 2")[0]
    assert "Loud.<|im_end|>" in second
    assert main(["data", "stats", str(config)]) == 2
    err = capsys.readouterr().err
    assert "datasets.0: `oa data stats` measures supervised (SFT) data, this dataset gives PreferencePair" in err
