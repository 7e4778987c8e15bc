"""The ``examples/augment-*.yaml`` configs run as shipped (against the fake endpoint in this process, in place of
``python -m oa_augment.testing``), and what ``oa augment`` writes is a ``datasets:`` entry ``oa train`` reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("augment-*.yaml"))


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES} == {"augment-self-instruct.yaml", "augment-answer.yaml",
                                          "augment-revision.yaml"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_on_the_fake_endpoint(example, tmp_path, monkeypatch, capsys):
    import yaml

    from oa_augment.testing import FakeOpenAIServer
    from oa_cli.main import main

    monkeypatch.chdir(REPO)
    has_engine = "engine" in yaml.safe_load(example.read_text())
    with FakeOpenAIServer() as server:  # as python -m oa_augment.testing serves it
        sets = ["--set", f"output={tmp_path / 'out.jsonl'}", "--set", "input.limit=20"]
        sets += ["--set", f"engine.base_url={server.url}"] if has_engine else []
        assert main(["augment", str(example), *sets]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    done = int(re.search(r"20 inputs: (\d+) done", out).group(1))
    assert done >= 18 and "train on it: datasets:" in out
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows and all(r["metadata"]["augment"]["augmenter"] in example.stem.replace("-", "_") for r in rows)


@pytest.mark.slow
def test_augmented_records_train(tmp_path, monkeypatch, llama_tok, tiny_llama_config):
    """augment -> train on CPU: the output is a `datasets:` entry of `oa train` as it is."""
    import torch
    from transformers import LlamaForCausalLM

    from oa_cli.main import main

    monkeypatch.chdir(REPO)
    out = tmp_path / "revision.jsonl"
    assert main(["augment", "examples/augment-revision.yaml", "--set", f"output={out}", "--set",
                 "input.limit=16"]) == 0
    model = tmp_path / "tiny"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True, max_position_embeddings=1024)).save_pretrained(model)
    llama_tok.save_pretrained(model)
    run = tmp_path / "sft.yaml"
    run.write_text(json.dumps({
        "method": "sft", "output_dir": str(tmp_path / "run"), "model": {"path": str(model), "dtype": "float32"},
        "datasets": [{"path": str(out), "format": "oa.prompt_completion"}],
        "data": {"chat_template": "chatml", "max_length": 768},
        "train": {"max_steps": 2, "per_device_batch_size": 2, "save_steps": 2, "logging_steps": 1}}))
    assert main(["train", str(run)]) == 0
    assert (tmp_path / "run").exists()
