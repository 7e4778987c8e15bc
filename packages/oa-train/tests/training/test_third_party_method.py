"""A training method written as a third party would — a config and an objective, registered through
``register_methods`` — trains, checkpoints and resumes exactly through `oa train`, with no loop code of its own."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from oa_cli.main import main
from oa_core import Method, hookimpl
from oa_core.plugins import add_plugin, remove_plugin
from oa_train.training import LoopConfig, Objective, StepLoss


# ---- the third-party method: ~30 lines, all it needs to write ------------------------------------------
class LineLMConfig(LoopConfig):
    text_file: str  # one training text per line; the last 4 are held out
    lines: int = 16


class LineLM(Objective):
    """Language modelling on the lines of a text file; the loss is the mean negative log-likelihood per line
    (a sequence-level normalisation, unlike SFT's per-token one)."""

    unit = "lines"

    def prepare_data(self):
        tok = self.run.tokenizer.tokenizer
        text = open(self.run.train.text_file).read().splitlines()[: self.run.train.lines]
        rows = [{"input_ids": ids, "labels": ids} for ids in (tok(line)["input_ids"] for line in text)]
        return rows[:-4], rows[-4:]

    def loss(self, model, batch):
        logprobs = self.run.label_logprobs.tokens(model, batch)
        tokens = logprobs.mask.sum(-1).clamp(min=1)
        return StepLoss(-(logprobs.per_sequence() / tokens).sum(), {"tokens_per_line": (tokens.sum(), len(tokens))})


class LineLMPlugin:
    @hookimpl
    def register_methods(self, register):
        register("line_lm", Method(config=LineLMConfig, objective=LineLM, description="per-line LM"))
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def line_lm():
    add_plugin(LineLMPlugin(), "line-lm-test")
    yield
    remove_plugin("line-lm-test")


def _config(tmp_path, tiny_model_dir, name: str) -> str:
    doc = {"method": "line_lm", "seed": 3, "output_dir": str(tmp_path / name),
           "model": {"path": tiny_model_dir, "dtype": "float32"},
           "train": {"text_file": str(tmp_path / "data.txt"), "lines": 12, "max_steps": 6, "per_device_batch_size": 2, "gradient_accumulation_steps": 2,
                     "learning_rate": 1e-3, "save_steps": 2, "eval_steps": 3, "logging_steps": 1, "warmup_steps": 1}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_third_party_method_trains_checkpoints_and_resumes_exactly(line_lm, tmp_path, tiny_model_dir, weights,
                                                                      repo_root):
    shakespeare = repo_root / "examples" / "data" / "tinyshakespeare" / "input_100k.txt"
    (tmp_path / "data.txt").write_text("\n".join(x for x in shakespeare.read_text().splitlines() if x.strip()))
    full = _config(tmp_path, tiny_model_dir, "full")
    assert main(["train", full]) == 0

    out = tmp_path / "full"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["lines"] == 4 and r["tokens_per_line"] > 1 for r in records)  # 2 x 2 lines per step
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]  # it learns
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["method"] == "line_lm" and manifest["status"] == "done"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"checkpoint-{s}" for s in (2, 4, 6)]

    # a second run loses its last checkpoint and final model, then resumes from checkpoint-4 with `oa train`
    again = _config(tmp_path, tiny_model_dir, "again")
    assert main(["train", again]) == 0
    import shutil

    shutil.rmtree(tmp_path / "again" / "checkpoints" / "checkpoint-6")
    shutil.rmtree(tmp_path / "again" / "model")
    assert main(["train", again, "--resume", "auto"]) == 0
    assert json.loads((tmp_path / "again" / "run_manifest.json").read_text())["resumed_from"].endswith("checkpoint-4")
    a, b = weights(out / "model"), weights(tmp_path / "again" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "again" / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
