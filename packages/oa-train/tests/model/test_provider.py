import json

import pytest
import torch

from oa_core.config import ModelSettings, TokenizerSettings
from oa_core.errors import OAError
from oa_data.tokenizer import load_tokenizer
from oa_infer.models import load_model


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_loads_local_causal_model_with_dtype(model_dirs):
    model = load_model(
        ModelSettings(path=model_dirs["llama_tied"], dtype="bfloat16", attn_implementation="eager")
    )
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"


def test_loads_sequence_classifier_with_num_labels(model_dirs):
    settings = ModelSettings(path=model_dirs["llama_tied"], type="seq_cls", dtype="float32")
    model = load_model(settings, num_labels=3)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.score.out_features == 3
    assert load_model(settings).score.out_features == 1  # a reward head by default
    saved = load_model(ModelSettings(path=model_dirs["llama_cls"], type="seq_cls", dtype="float32"))
    assert saved.score.out_features == 2  # the checkpoint's own labels


def test_tokenizer_defaults_to_model_path_and_gets_a_pad_token(model_dirs, tokenizer_path, tmp_path):
    tok = load_tokenizer(TokenizerSettings(path=tokenizer_path))
    assert len(tok) == 32000 and tok.pad_token == tok.unk_token == "<unk>"
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(TokenizerSettings(), ModelSettings(path=str(tmp_path)))
    assert again("hello world").input_ids == tok("hello world").input_ids


def test_missing_local_model_is_a_one_line_error(tmp_path):
    with pytest.raises(OAError) as err:
        load_model(ModelSettings(path=str(tmp_path / "nope")))
    assert _one_line(err).startswith("model.path: local model folder") and "not found" in str(err.value)
    with pytest.raises(OAError, match=r"^tokenizer\.path: local model folder"):
        load_tokenizer(TokenizerSettings(path="./no/such/tokenizer"))


def test_hub_id_offline_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OAError) as err:
        load_model(ModelSettings(path="oa-test-org/model-that-does-not-exist"))
    assert "offline" in _one_line(err) and err.value.hint
    with pytest.raises(OAError, match=r"^tokenizer\.path: 'oa-test-org/tok' is not a local folder"):
        load_tokenizer(TokenizerSettings(path="oa-test-org/tok"))


def test_pickle_weights_refused_by_default(model_dirs, tmp_path):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dirs["llama_tied"])
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path)
    with pytest.raises(OAError) as err:
        load_model(ModelSettings(path=str(tmp_path)))
    assert "safetensors" in _one_line(err)
    allowed = load_model(
        ModelSettings(path=str(tmp_path), dtype="float32", model_kwargs={"use_safetensors": False})
    )
    assert torch.equal(allowed.lm_head.weight, model.lm_head.weight)


def test_remote_code_is_not_run_by_default(model_dirs, tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "oa_custom",
                "auto_map": {"AutoConfig": "custom.Cfg", "AutoModelForCausalLM": "custom.M"},
            }
        )
    )
    (tmp_path / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(OAError) as err:
        load_model(ModelSettings(path=str(tmp_path)))
    assert _one_line(err).startswith("model.path:")
    assert not marker.exists()


def test_model_kwargs_cannot_override_own_keys(model_dirs):
    with pytest.raises(OAError, match=r"^model\.model_kwargs\.trust_remote_code: "):
        load_model(ModelSettings(path=model_dirs["llama_tied"], model_kwargs={"trust_remote_code": True}))


@pytest.mark.parametrize("impl", ["bogus_attn", "flash_attention_2"])
def test_unusable_attention_implementation_names_the_key(model_dirs, impl):
    with pytest.raises(OAError) as err:
        load_model(ModelSettings(path=model_dirs["llama_tied"], attn_implementation=impl))
    assert _one_line(err).startswith(f"model.attn_implementation: '{impl}' cannot be used")


def test_type_without_a_head_for_the_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(OAError) as err:
        load_model(ModelSettings(path=str(tmp_path), type="causal"))
    assert _one_line(err).startswith("model.type: 'causal' is not available")


def test_random_init_builds_from_config_only(tmp_path):
    """`model.random_init`: a folder with just config.json gives a seeded, randomly initialised model."""
    import torch
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(tmp_path)
    settings = ModelSettings(path=str(tmp_path), random_init=True, dtype="bfloat16")
    torch.manual_seed(0)
    a = load_model(settings)
    torch.manual_seed(0)
    b = load_model(settings)
    assert a.config.model_type == "llama" and a.dtype == torch.bfloat16
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(OAError, match="model.path"):
        load_model(ModelSettings(path=str(tmp_path / "missing"), random_init=True))
