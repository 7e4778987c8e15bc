"""Model folders: a pickle that torch refuses to load safely is one line, not a traceback; code from a model folder
never runs without a warning on the console."""

from __future__ import annotations

import os

import pytest
import torch
import yaml

from oa_cli.main import main


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_an_unsafe_pickle_with_safetensors_off_is_one_line(tmp_path, capsys, tiny_llama_config, alpaca_seed):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config())
    model.config.save_pretrained(tmp_path / "model")
    torch.save({**model.state_dict(), "payload": _Payload()}, tmp_path / "model" / "pytorch_model.bin")
    doc = {"method": "sft", "output_dir": str(tmp_path / "out"),
           "model": {"path": str(tmp_path / "model"), "model_kwargs": {"use_safetensors": False}},
           "tokenizer": {"path": "assets/tokenizers/llama2-sp"},
           "datasets": [{"path": str(alpaca_seed), "format": "alpaca"}], "data": {"max_length": 128, "chat_template": "chatml"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    assert main(["train", str(tmp_path / "run.yaml")]) == 2
    out = capsys.readouterr()
    err = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "pickled weights" in err[0] and "Traceback" not in out.err and "pwned" not in out.out


@pytest.mark.parametrize("section", ["model", "tokenizer"])
def test_trust_remote_code_prints_a_warning(tmp_path, capsys, section, repo_root):
    from oa_core.config import ModelSettings, TokenizerSettings
    from oa_data.tokenizer import load_tokenizer
    from oa_infer.models import load_model

    tokenizer_dir = str(repo_root / "assets" / "tokenizers" / "llama2-sp")
    if section == "tokenizer":
        load_tokenizer(TokenizerSettings(path=tokenizer_dir, trust_remote_code=True))
    else:
        with pytest.raises(Exception):  # noqa: B017 (a tokenizer folder holds no model; the warning comes first)
            load_model(ModelSettings(path=tokenizer_dir, trust_remote_code=True))
    assert f"warning: {section}.trust_remote_code is on: Python code from '{tokenizer_dir}' will run" in capsys.readouterr().err
