"""Preference fixtures: a tiny Llama with a 256-token vocabulary, random pairs and unpaired examples, and
objectives set up outside the loop (a one-process stand-in for accelerate)."""

from __future__ import annotations

import random
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

VOCAB = 256


@pytest.fixture
def tiny_lm(tiny_llama_config):
    """``tiny_lm(seed=0)``: a float32 Llama (hidden 32, 2 layers, vocab 256, untied head)."""
    from transformers import LlamaForCausalLM

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, tie_word_embeddings=False)).float()

    return make


def _ids(rng, n):
    return [rng.randrange(3, VOCAB) for _ in range(n)]


@pytest.fixture
def pairs():
    """``pairs(n, seed=0, prompt=(2, 6), chosen=(1, 7), rejected=(1, 7))``: pair examples with random token ids
    (every reply token supervised), lengths drawn from the ranges (a fixed int: that length)."""

    def make(n: int, seed: int = 0, prompt=(2, 6), chosen=(1, 7), rejected=(1, 7)):
        rng = random.Random(seed)
        length = lambda r: r if isinstance(r, int) else rng.randint(*r)  # noqa: E731
        out = []
        for _ in range(n):
            c, r = _ids(rng, length(chosen)), _ids(rng, length(rejected))
            out.append({"prompt_input_ids": _ids(rng, length(prompt)), "chosen_input_ids": c, "chosen_labels": c,
                        "rejected_input_ids": r, "rejected_labels": r, "margin": None})
        return out

    return make


@pytest.fixture
def unpaired():
    """``unpaired(n, seed=0)``: KTO examples, alternately desirable, each with another's completion for the KL."""

    def make(n: int, seed: int = 0):
        rng = random.Random(seed)
        out = [{"prompt_input_ids": _ids(rng, rng.randint(2, 5)), "completion_input_ids": c, "completion_labels": c,
                "label": i % 2 == 0} for i, c in enumerate(_ids(rng, rng.randint(1, 6)) for _ in range(n))]
        for i, ex in enumerate(out):
            ex["kl_input_ids"] = ex["kl_labels"] = out[i - 1]["completion_input_ids"]
        return out

    return make


class OneProcess:
    """What the objectives use of an ``accelerate.Accelerator``, for one CPU process."""

    from accelerate.utils import DistributedType

    device = torch.device("cpu")
    num_processes, process_index, is_main_process = 1, 0, True
    distributed_type = DistributedType.NO
    state = SimpleNamespace(deepspeed_plugin=None)

    def reduce(self, tensor, reduction="sum"):
        return tensor

    def autocast(self):
        return nullcontext()

    def unwrap_model(self, model):
        return model


@pytest.fixture
def objective():
    """``objective(method, label_logprobs=None, **train) -> Objective`` set up for ``train:`` options, without a
    reference (set ``.reference`` / ``.tables``)."""
    from oa_core.plugins import get_registry
    from oa_train.training.logprobs import LabelLogProbs

    def make(method: str, label_logprobs=None, **train):
        entry = get_registry().get("method", method)
        obj = entry.objective()
        run = SimpleNamespace(train=entry.config(**train), label_logprobs=label_logprobs or LabelLogProbs(), pad_id=0,
                              accelerator=OneProcess(), device=torch.device("cpu"))
        obj.setup(run)
        obj.started = True
        return obj

    return make


def _toy_pairs(n: int, seed: int = 0) -> list[dict]:
    """A learnable preference set: the chosen reply is always a cheerful "yes", the rejected a gloomy "no"."""
    rng = random.Random(seed)
    words = ["apples", "rivers", "clocks", "stones", "lamps", "birds", "roads", "coins"]
    return [{"prompt": f"Do you like {rng.choice(words)} and {rng.choice(words)}?",
             "chosen": "Yes, I like them very much!", "rejected": "No. I do not."} for _ in range(n)]


@pytest.fixture
def toy_pairs():
    """``toy_pairs(n, seed=0)``: rows ``{prompt, chosen, rejected}`` of a learnable preference."""
    return _toy_pairs


@pytest.fixture
def write_jsonl(tmp_path):
    import json

    def write(name: str, rows: list[dict]):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    return write


@pytest.fixture
def run_config(tmp_path, tiny_model_dir, write_jsonl):
    """``run_config(name, method="dpo", datasets=None, overrides=(), **train) -> LoadedConfig``: a run on the
    tiny Llama (sdpa, float32) with chatml; default data: 24 toy pairs (train) and 4 (eval); the reference
    cache in ``tmp_path/cache``."""
    import yaml

    from oa_core.config import load_config

    def make(name: str = "run", method: str = "dpo", datasets=None, eval_datasets=None, overrides=(), model=None,
             **train):
        if datasets is None:
            datasets = [{"path": write_jsonl("toy.jsonl", _toy_pairs(24)), "format": "preference"}]
            eval_datasets = [{"path": write_jsonl("toy-eval.jsonl", _toy_pairs(4, seed=1)), "format": "preference"}]
        doc = {"method": method, "seed": 3, "output_dir": str(tmp_path / name),
               "model": model or {"path": tiny_model_dir, "dtype": "float32", "attn_implementation": "sdpa"},
               "datasets": datasets, "eval_datasets": eval_datasets or [],
               "data": {"chat_template": "chatml", "max_length": 64, "cache_dir": str(tmp_path / "cache")},
               "train": {"learning_rate": 1e-3, "logging_steps": 1, "save_steps": None, "lr_scheduler": "constant",
                         "max_steps": 2, "per_device_batch_size": 4} | train}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_config(path, list(overrides))

    return make


@pytest.fixture
def records():
    """``records(output_dir) -> list[dict]``: the run's metrics.jsonl."""
    import json
    from pathlib import Path

    def read(out):
        return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]

    return read
