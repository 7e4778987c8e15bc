import math

import pytest
import torch

from oa_core.errors import OAError
from oa_infer.merge import merge_adapter, merge_and_save
from oa_infer.models import load_adapter, resize_embeddings
from oa_train.model.peft_setup import apply_peft, qlora_quantization, save_adapter
from oa_train.model.settings import NewToken, NewTokenSettings, PeftSettings
from oa_train.model.tokens import add_new_tokens

IDS = torch.tensor([[1, 450, 4996, 17354, 1701, 29916, 2]])
ADAPTER_MARKS = ("lora_", "prompt_encoder", "trainable_tokens_", "modules_to_save")


def _step(model, ids=IDS):
    """One forward+backward step; returns the names of parameters that got a gradient."""
    model.train()
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def _logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


METHODS = {
    "lora": dict(method="lora", target_modules=["q_proj", "v_proj"]),
    "rslora": dict(method="lora", r=4, alpha=8, use_rslora=True),
    "dora": dict(method="lora", target_modules=["q_proj", "down_proj"], use_dora=True),
    "prefix": dict(method="prefix", num_virtual_tokens=4),
    "prefix_projection": dict(
        method="prefix", num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=16
    ),
    "prompt": dict(method="prompt", num_virtual_tokens=4),
    "prompt_text": dict(method="prompt", num_virtual_tokens=4, prompt_init_text="Answer the question"),
    "ptuning": dict(method="ptuning", num_virtual_tokens=4, encoder_hidden_size=16),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_only_adapter_params_train_and_adapter_round_trips(load, tokenizer, tmp_path, name):
    settings = PeftSettings(**METHODS[name])
    model = apply_peft(load("llama_untied"), settings, tokenizer=tokenizer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(any(m in n for m in ADAPTER_MARKS) for n in trainable)
    graded = _step(model)
    assert graded and graded <= trainable
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    before = _logits(model)

    save_adapter(model, tokenizer, tmp_path / "adapter")
    again = load_adapter(load("llama_untied"), str(tmp_path / "adapter"), trainable=False)
    torch.testing.assert_close(_logits(again), before)
    assert not torch.allclose(_logits(load("llama_untied")), before[:, -IDS.shape[1] :])


def test_lora_variants_configure_peft(load, tokenizer):
    rs = apply_peft(load("llama_untied"), PeftSettings(**METHODS["rslora"]))
    q_proj = rs.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == pytest.approx(8 / math.sqrt(4))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in rs.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }  # all-linear, no lm_head
    dora = apply_peft(load("llama_untied"), PeftSettings(**METHODS["dora"]))
    magnitudes = {n for n, p in dora.named_parameters() if "lora_magnitude_vector" in n and p.requires_grad}
    assert len(magnitudes) == 4  # q_proj and down_proj of 2 layers


def test_prompt_text_init_uses_the_texts_embeddings(load, tokenizer):
    model = apply_peft(load("llama_untied"), PeftSettings(**METHODS["prompt_text"]), tokenizer=tokenizer)
    ids = tokenizer("Answer the question", add_special_tokens=False).input_ids
    ids = (ids * 4)[:4]
    expected = model.get_input_embeddings().weight[ids]
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight, expected)


def test_seq_cls_lora_trains_the_head(load):
    model = apply_peft(
        load("llama_untied", type="seq_cls"), PeftSettings(method="lora", target_modules=["q_proj"])
    )
    model.train()
    out = model(input_ids=IDS, labels=torch.tensor([0.5]))
    out.loss.backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any("score" in n and "modules_to_save" in n for n in graded)
    assert all(any(m in n for m in ADAPTER_MARKS) for n in graded)


def test_unknown_target_module_is_a_one_line_error(load):
    with pytest.raises(OAError) as err:
        apply_peft(load("llama_untied"), PeftSettings(method="lora", target_modules=["q_proj", "qkv"]))
    assert str(err.value).startswith("peft.target_modules: no module named 'qkv' in this LlamaForCausalLM")
    assert "q_proj" in err.value.hint and "\n" not in str(err.value)
    with pytest.raises(OAError) as err:
        apply_peft(load("gpt2"), PeftSettings(method="lora", target_modules=["q_proj"]))
    assert err.value.hint == "linear modules: c_attn, c_fc, c_proj (or 'all-linear')"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_qlora_without_bitsandbytes_or_gpu_is_a_clear_error(load):
    settings = PeftSettings(method="qlora")
    with pytest.raises(OAError, match=r"^peft\.method: qlora needs (the bitsandbytes package|a CUDA GPU)"):
        qlora_quantization(settings)
    with pytest.raises(OAError, match=r"^peft\.method: qlora needs"):
        apply_peft(load("llama_untied"), settings)


def test_prompt_learning_refuses_new_tokens_and_merging(load, tokenizer, tmp_path):
    with pytest.raises(OAError, match=r"^new_tokens: not supported with peft\.method: prompt"):
        apply_peft(load("llama_untied"), PeftSettings(method="prompt"), new_token_ids=[32000])
    model = apply_peft(load("llama_untied"), PeftSettings(method="prefix", num_virtual_tokens=2))
    with pytest.raises(OAError, match="cannot be merged"):
        merge_and_save(model, tokenizer, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


NEW = NewTokenSettings(
    tokens=[NewToken(token="<|user|>", init="copy", source="</s>"), NewToken(token="<|bot|>")]
)


@pytest.mark.parametrize("name", ["llama_untied", "llama_tied"])
def test_new_token_rows_survive_save_load_and_merge(load, model_dirs, tokenizer, tmp_path, name):
    from oa_core.config import ModelSettings, TokenizerSettings
    from oa_data.tokenizer import load_tokenizer
    from oa_infer.models import load_model

    model = load(name)
    ids = [t["id"] for t in add_new_tokens(model, tokenizer, NEW).values()]
    peft_model = apply_peft(model, PeftSettings(method="lora", target_modules=["q_proj"]), new_token_ids=ids)
    x = torch.tensor([[1, ids[0], 450, ids[1], 2]])
    init_rows = peft_model.get_input_embeddings()(torch.tensor(ids)).detach().clone()
    graded = _step(peft_model, x)
    assert any("trainable_tokens_delta" in n for n in graded)
    torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0).step()
    rows = peft_model.get_input_embeddings()(torch.tensor(ids)).detach()
    assert not torch.allclose(rows, init_rows)
    logits = _logits(peft_model, x)

    save_adapter(peft_model, tokenizer, tmp_path / "adapter")
    assert (
        tmp_path / "adapter" / "adapter_model.safetensors"
    ).stat().st_size < 200_000  # rows, not whole matrices
    tok2 = load_tokenizer(TokenizerSettings(path=str(tmp_path / "adapter")))
    assert tok2.convert_tokens_to_ids("<|bot|>") == ids[1]
    base = load(name)
    resize_embeddings(base, len(tok2))
    reloaded = load_adapter(base, str(tmp_path / "adapter"), trainable=False)
    torch.testing.assert_close(_logits(reloaded, x), logits)

    merge_and_save(reloaded, tok2, tmp_path / "merged")
    merged = load_model(ModelSettings(path=str(tmp_path / "merged"), dtype="float32"))
    torch.testing.assert_close(merged.get_input_embeddings().weight[ids], rows)
    torch.testing.assert_close(_logits(merged, x), logits, atol=1e-5, rtol=1e-4)

    # the one-call route: base + adapter folder -> merged folder
    base_settings = ModelSettings(path=model_dirs[name], dtype="float32")
    merge_adapter(base_settings, str(tmp_path / "adapter"), tmp_path / "merged2")
    merged2 = load_model(ModelSettings(path=str(tmp_path / "merged2"), dtype="float32"))
    torch.testing.assert_close(_logits(merged2, x), _logits(merged, x))
    assert (
        load_tokenizer(TokenizerSettings(path=str(tmp_path / "merged2"))).convert_tokens_to_ids("<|bot|>")
        == ids[1]
    )


def test_a_qlora_adapter_records_its_bases_quantization(load, tokenizer, tmp_path):
    """peft does not record that an adapter was trained on 4-bit weights; oa merge warns about it."""
    import json

    from transformers import BitsAndBytesConfig

    model = apply_peft(load("llama_untied"), PeftSettings(method="lora", target_modules=["q_proj"]))
    save_adapter(model, tokenizer, tmp_path / "lora")
    assert not (tmp_path / "lora" / "adapter_quantization.json").exists()
    model.get_base_model().config.quantization_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    save_adapter(model, tokenizer, tmp_path / "qlora")  # the config a QLoRA base has (no 4-bit weights on a CPU)
    recorded = json.loads((tmp_path / "qlora" / "adapter_quantization.json").read_text())
    assert recorded["load_in_4bit"] and recorded["bnb_4bit_quant_type"] == "nf4"


class _HalfWriter:
    """Writes one file, then fails: a crash in the middle of saving."""

    def save_pretrained(self, path, **kwargs):
        (path / "adapter_model.safetensors").write_text("partial")
        raise RuntimeError("disk full")


def test_saving_is_atomic(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_config.json").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        save_adapter(_HalfWriter(), None, out)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
    assert [p.name for p in out.iterdir()] == ["adapter_config.json"]
    assert (out / "adapter_config.json").read_text() == "old"
