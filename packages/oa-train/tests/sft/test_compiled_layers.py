"""The ``compile.layers`` model patch (oa-kernels) in a training run: compiled decoder layers train as eager ones,
with gradient checkpointing too (a checkpointed layer re-runs its compiled forward in the backward)."""

from __future__ import annotations

import json

import pytest
import torch

from oa_cli.main import main

from .test_multiprocess import _config, _write_data

pytest.importorskip("oa_kernels", reason="compile.layers is an oa-kernels patch")


def test_compiled_layers_with_gradient_checkpointing_train_as_eager(tmp_path, tiny_model_dir, weights, alpaca_seed):
    _write_data(tmp_path, alpaca_seed)
    train = {"optimizer": "adamw", "learning_rate": 1e-3, "gradient_checkpointing": True}
    for name, patches in (("eager", "[]"), ("compiled", "[compile.layers]")):
        config = _config(tmp_path, tiny_model_dir, name, batch=2, accumulation=1, **train)
        assert main(["train", config, "--set", f"model.patches={patches}"]) == 0

    manifest = json.loads((tmp_path / "compiled" / "run_manifest.json").read_text())
    assert "2 LlamaDecoderLayer layers compiled" in json.dumps(manifest["model"])
    eager, compiled = weights(tmp_path / "eager" / "model"), weights(tmp_path / "compiled" / "model")
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5)
    logs = [[json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("eager", "compiled")]
    assert logs[0][-1]["eval_loss"] == pytest.approx(logs[1][-1]["eval_loss"], abs=1e-5)
