"""QLoRA end to end; runs only where bitsandbytes and a CUDA GPU are present."""

import importlib.util

import pytest
import torch
import yaml

from oa_core.config import ModelSettings, load_config
from oa_infer.models import load_adapter, load_model
from oa_train.model import prepare_model
from oa_train.model.peft_setup import apply_peft, qlora_quantization, save_adapter
from oa_train.model.settings import PeftSettings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available(),
    reason="QLoRA needs bitsandbytes and a CUDA GPU",
)]


def test_qlora_trains_only_the_adapter_and_round_trips(model_dirs, tokenizer, tmp_path):
    import bitsandbytes as bnb
    from peft import prepare_model_for_kbit_training

    settings = PeftSettings(method="qlora", target_modules=["q_proj", "v_proj", "down_proj"])
    model_settings = ModelSettings(path=model_dirs["llama_untied"], dtype="bfloat16")
    model = load_model(model_settings, quantization=qlora_quantization(settings))
    assert model.is_loaded_in_4bit
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    model = apply_peft(model, settings)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    ids = torch.tensor([[1, 450, 4996, 17354, 1701, 2]], device="cuda")
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None}
    assert graded and graded <= trainable
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits

    save_adapter(model, tokenizer, tmp_path / "adapter")
    base = load_model(model_settings, quantization=qlora_quantization(settings))
    again = load_adapter(prepare_model_for_kbit_training(base), str(tmp_path / "adapter"), trainable=False)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, expected)


def test_prepare_model_with_qlora(model_dirs, tokenizer_path, tmp_path, sections_registry):
    doc = {
        "method": "noop",
        "model": {"path": model_dirs["llama_tied"], "dtype": "bfloat16"},
        "tokenizer": {"path": tokenizer_path},
        "peft": {"method": "qlora", "target_modules": "all-linear"},
        "new_tokens": {"tokens": [{"token": "<|user|>", "init": "copy", "source": "</s>"}]},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / "run.yaml", registry=sections_registry).config
    prepared = prepare_model(cfg, registry=sections_registry, show_table=False)
    model, manifest = prepared.model, prepared.manifest
    assert model.is_loaded_in_4bit and manifest["peft"] == "qlora"
    ids = torch.tensor([[1, 32000, 450, 2]], device=model.device)
    model(input_ids=ids, labels=ids).loss.backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any("trainable_tokens_delta" in n for n in graded)
    assert all("lora_" in n or "trainable_tokens_delta" in n for n in graded)
