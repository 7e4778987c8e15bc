"""``oa augment`` with oa-infer's ``hf`` generator and a tiny random-init Llama on the CPU: the same pipeline as
over HTTP (an engine that is not thread-safe is called one record at a time), and deterministic given the seed;
``best_of_n`` ranked by a tiny reward model (``reward.model``, scored by oa-infer)."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_best_of_n_ranked_by_a_tiny_reward_model(tiny_chat_model, seeds, server, tmp_path, tiny_llama_config,
                                                 llama_tok):
    import shutil

    import torch
    from transformers import LlamaForSequenceClassification

    from oa_augment.config import validate
    from oa_augment.pipeline import run_augment

    rm = tmp_path / "rm"
    torch.manual_seed(1)
    LlamaForSequenceClassification(tiny_llama_config(num_labels=1, max_position_embeddings=1024)).save_pretrained(rm)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                 "chat_template.jinja"):
        if (src := Path(tiny_chat_model) / name).exists():
            shutil.copy(src, rm / name)
    server.reply = lambda prompt, body, k: f"answer number {k} " + "word " * k
    data = {"augmenter": "best_of_n", "input": {"path": str(seeds), "format": "alpaca", "limit": 3},
            "output": str(tmp_path / "ranked.jsonl"), "generator": "openai", "options": {"n": 3, "output": "ranked"},
            "engine": {"model": "fake", "base_url": server.url}, "reward": {"model": str(rm), "device": "cpu"},
            "dedup": {"exact": False, "near": False}}
    summary = run_augment(validate(data, {}, "run.yaml"), progress=False)
    assert summary.done == 3, summary.lines()
    rows = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    scores = rows[0]["metadata"]["scores"]
    assert len(rows[0]["replies"]) == 3 and scores == sorted(scores, reverse=True)
