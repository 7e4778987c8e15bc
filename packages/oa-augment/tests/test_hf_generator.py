"""``oa augment`` with oa-infer's ``hf`` generator and a tiny random-init Llama on the CPU: the same pipeline as
over HTTP (an engine that is not thread-safe is called one record at a time), and deterministic given the seed."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("oa_infer")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory, llama_tok, tiny_llama_config) -> str:
    import copy

    import torch
    from transformers import LlamaForCausalLM

    from oa_data.special_tokens import prepare_tokenizer
    from oa_data.templates import BUILTIN_TEMPLATES, standalone_jinja

    path = tmp_path_factory.mktemp("tiny-chat")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True, max_position_embeddings=1024)).save_pretrained(path)
    tok = copy.deepcopy(llama_tok)
    prepare_tokenizer(tok, (), BUILTIN_TEMPLATES["chatml"])
    tok.chat_template = standalone_jinja(BUILTIN_TEMPLATES["chatml"])
    tok.save_pretrained(path)
    return str(path)


def test_answers_with_a_tiny_hf_model(tiny_chat_model, seeds, tmp_path):
    from oa_augment.config import validate
    from oa_augment.pipeline import run_augment

    def run(name: str, concurrency: int):
        data = {"augmenter": "answer", "input": {"path": str(seeds), "format": "alpaca", "limit": 4},
                "output": str(tmp_path / f"{name}.jsonl"), "generator": "hf", "concurrency": concurrency,
                "engine": {"model": tiny_chat_model, "device": "cpu"}, "options": {"drop_truncated": False},
                "generation": {"max_new_tokens": 6, "temperature": 1.0}, "dedup": {"near": False}}
        return run_augment(validate(data, {}, "run.yaml"), progress=False)

    summary = run("a", 4)
    assert summary.inputs == 4 and summary.failed == 0 and summary.done + summary.filtered == 4
    assert summary.completion_tokens > 0
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert rows and rows[0]["metadata"]["augment"]["generator"] == "hf"
    run("b", 1)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()  # sampled, yet the same
