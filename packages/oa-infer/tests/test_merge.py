import json
import shutil

import pytest
import torch
from safetensors import safe_open

from oa_core.errors import OAError
from oa_infer.merge import merge_adapter, merge_and_save


def _plain(folder):
    """The saved model through plain transformers (no peft, no oa)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _greedy(model, ids, eos, n=12):
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             eos_token_id=eos, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def _keys(folder):
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("base", ["tied", "untied"])
def test_merged_model_loads_in_transformers_and_matches_base_with_adapter(bases, chatml_tok, prompt_ids, train_adapter, tmp_path,
                                                                          base):
    from transformers import AutoTokenizer, GenerationConfig

    head = None if base == "tied" else ["lm_head"]  # the untied head trained whole, its new rows with it
    ref = train_adapter(bases[base], tmp_path / "adapter", chatml_tok, modules_to_save=head)
    done = merge_adapter(None, str(tmp_path / "adapter"), tmp_path / "merged")  # the base named by the adapter

    assert done.base == bases[base] and done.dtype == "float32" and done.vocab_size == 32002
    merged = _plain(tmp_path / "merged")
    torch.testing.assert_close(_logits(merged, prompt_ids), _logits(ref, prompt_ids), atol=1e-5, rtol=1e-4)
    stops = [32001, 2]  # <|im_end|>, </s>
    answer = _greedy(merged, prompt_ids, stops)
    assert len(answer) > 3 and answer == _greedy(ref, prompt_ids, stops)

    assert GenerationConfig.from_pretrained(tmp_path / "merged").eos_token_id == stops == done.eos_token_id
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert len(tok) == 32002 and tok.chat_template == chatml_tok.chat_template
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["vocab_size"] == 32002 and config["dtype"] == "float32"
    if base == "tied":  # the new rows of the tied matrix went into both: it stays one matrix
        assert done.tied and config["tie_word_embeddings"] and "lm_head.weight" not in _keys(tmp_path / "merged")
    else:
        trained_head = ref.base_model.model.lm_head.modules_to_save["default"].weight
        assert not done.tied and not config["tie_word_embeddings"]
        torch.testing.assert_close(merged.lm_head.weight, trained_head)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")  # peft, on building the adapter
@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_lora_on_one_side_of_tied_embeddings_saves_them_untied(bases, llama_tok, chat_tokenizer, train_adapter,
                                                                tmp_path, capsys, monkeypatch, target):
    """Merged as it is, a LoRA delta on the shared matrix would change both sides, and re-tying on load would
    replace the trained head: the merged model keeps the two apart."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr("oa_core.errors._WARNED", set())  # each case warns
    tok = chat_tokenizer(llama_tok, "llama-2")  # no new tokens
    ref = train_adapter(bases["tied"], tmp_path / "adapter", tok, target_modules=["q_proj", target])
    done = merge_adapter(bases["tied"], str(tmp_path / "adapter"), tmp_path / "merged")

    assert not done.tied and "untied embeddings" in capsys.readouterr().err
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= _keys(tmp_path / "merged")
    merged = _plain(tmp_path / "merged")
    ids = torch.tensor([[1, 518, 25580, 29962, 15043, 518, 29914, 25580, 29962]])
    torch.testing.assert_close(_logits(merged, ids), _logits(ref, ids), atol=1e-5, rtol=1e-4)
    untouched = "model.embed_tokens" if target == "lm_head" else "lm_head"
    base = AutoModelForCausalLM.from_pretrained(bases["tied"])
    torch.testing.assert_close(merged.get_submodule(untouched).weight, base.model.embed_tokens.weight)


def test_embeddings_grow_to_the_rows_the_adapter_saved(bases, chatml_tok, prompt_ids, train_adapter, tmp_path):
    """Embeddings resized past the tokenizer (pad_to_multiple_of) in training: the saved head has those rows."""
    ref = train_adapter(bases["untied"], tmp_path / "adapter", chatml_tok, modules_to_save=["lm_head"],
                        pad_to_multiple_of=64)
    done = merge_adapter(None, str(tmp_path / "adapter"), tmp_path / "merged")
    assert done.vocab_size == 32064 and _plain(tmp_path / "merged").config.vocab_size == 32064
    torch.testing.assert_close(_logits(_plain(tmp_path / "merged"), prompt_ids), _logits(ref, prompt_ids),
                               atol=1e-5, rtol=1e-4)


def test_merge_runs_in_float32_and_saves_the_base_dtype(bases, chatml_tok, train_adapter, tmp_path):
    train_adapter(bases["bf16"], tmp_path / "adapter", chatml_tok)
    auto = merge_adapter(bases["bf16"], str(tmp_path / "adapter"), tmp_path / "auto")
    full = merge_adapter(bases["bf16"], str(tmp_path / "adapter"), tmp_path / "full", dtype="float32")
    assert (auto.dtype, full.dtype) == ("bfloat16", "float32")
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["dtype"] == "bfloat16"
    lora_weight = "model.layers.0.self_attn.q_proj.weight"
    with safe_open(str(tmp_path / "auto" / "model.safetensors"), "pt") as a, \
            safe_open(str(tmp_path / "full" / "model.safetensors"), "pt") as f:
        assert a.get_tensor(lora_weight).dtype == torch.bfloat16
        merged = f.get_tensor(lora_weight)  # the float32 merge of bfloat16 weights: not bfloat16 values any more
        assert merged.dtype == torch.float32 and not torch.equal(merged, merged.to(torch.bfloat16).float())
        for key in a.keys():  # the bfloat16 weights are the float32 merge, rounded once
            assert torch.equal(a.get_tensor(key), f.get_tensor(key).to(torch.bfloat16)), key


def test_a_quantized_model_is_not_merged_in_place(bases, chatml_tok, train_adapter, tmp_path):
    model = train_adapter(bases["tied"], tmp_path / "adapter", chatml_tok)
    model.get_base_model().is_loaded_in_4bit = True
    with pytest.raises(OAError) as err:
        merge_and_save(model, chatml_tok, tmp_path / "merged")
    assert str(err.value).startswith("merge: the model is loaded quantized") and "\n" not in str(err.value)
    assert "oa merge --adapter" in err.value.hint
    assert not (tmp_path / "merged").exists()


def test_a_qlora_adapter_merges_into_the_full_precision_base_with_a_warning(bases, chatml_tok, prompt_ids,
                                                                          train_adapter, tmp_path, capsys):
    from transformers import BitsAndBytesConfig

    ref = train_adapter(bases["untied"], tmp_path / "adapter", chatml_tok,
                        quantization=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    assert json.loads((tmp_path / "adapter" / "adapter_quantization.json").read_text())["load_in_4bit"]
    merge_adapter(None, str(tmp_path / "adapter"), tmp_path / "merged")
    err = capsys.readouterr().err
    assert "trained on the 4-bit (QLoRA) weights of its base; it is merged into the full-precision base" in err
    merged = _plain(tmp_path / "merged")
    assert getattr(merged.config, "quantization_config", None) is None
    torch.testing.assert_close(_logits(merged, prompt_ids), _logits(ref, prompt_ids), atol=1e-5, rtol=1e-4)


def test_a_base_saved_quantized_is_refused(bases, chatml_tok, train_adapter, tmp_path):
    train_adapter(bases["untied"], tmp_path / "adapter", chatml_tok)
    shutil.copytree(bases["untied"], tmp_path / "base-4bit")
    config = json.loads((tmp_path / "base-4bit" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (tmp_path / "base-4bit" / "config.json").write_text(json.dumps(config))
    with pytest.raises(OAError) as err:
        merge_adapter(str(tmp_path / "base-4bit"), str(tmp_path / "adapter"), tmp_path / "merged")
    assert str(err.value).startswith(f"--base: '{tmp_path / 'base-4bit'}' is saved quantized (bitsandbytes)")
    assert err.value.hint == "pass --base the unquantized model the adapter's base was made from"
    assert not (tmp_path / "merged").exists()


def test_bad_inputs_are_one_line_errors(bases, chatml_tok, train_adapter, tmp_path):
    train_adapter(bases["tied"], tmp_path / "adapter", chatml_tok)
    train_adapter(bases["tied"], tmp_path / "prompt", chatml_tok, method="prompt")
    (tmp_path / "empty").mkdir()
    adapter = str(tmp_path / "adapter")
    cases = [
        ((None, str(tmp_path / "missing"), tmp_path / "out"), f"--adapter: '{tmp_path / 'missing'}' not found"),
        ((None, str(tmp_path / "empty"), tmp_path / "out"),
         f"--adapter: no adapter (adapter_config.json) in '{tmp_path / 'empty'}'"),
        ((None, str(tmp_path / "prompt"), tmp_path / "out"),
         f"--adapter: '{tmp_path / 'prompt'}' is a prompt-learning adapter (PROMPT_TUNING: virtual tokens"),
        ((None, adapter, tmp_path / "adapter"), f"{tmp_path / 'adapter'}: is the same file as the input --adapter"),
        ((None, adapter, tmp_path / "adapter" / "merged"), f"{tmp_path / 'adapter' / 'merged'}: is inside the input --adapter"),
        ((None, adapter, bases["tied"]), f"{bases['tied']}: is the same file as the input --base"),
        ((str(tmp_path / "nowhere"), adapter, tmp_path / "out"), f"--base: local model folder '{tmp_path / 'nowhere'}' not found"),
    ]
    before = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    for args, message in cases:
        with pytest.raises(OAError) as err:
            merge_adapter(*args)
        assert str(err.value).startswith(message) and "\n" not in str(err.value) and err.value.hint
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == before
    assert not (tmp_path / "out").exists()


def test_oa_merge_command(bases, chatml_tok, train_adapter, tmp_path, capsys):
    from oa_cli.main import main

    train_adapter(bases["untied"], tmp_path / "adapter", chatml_tok, modules_to_save=["lm_head"])
    assert main(["merge", "--adapter", str(tmp_path / "adapter"), "--output", str(tmp_path / "merged"),
                 "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"merged {tmp_path / 'adapter'} into {bases['untied']} -> {tmp_path / 'merged'} (bfloat16, "
                          "32002 tokens, untied embeddings, stops at token ids [32001, 2])")
    assert _plain(tmp_path / "merged").dtype == torch.bfloat16
    capsys.readouterr()

    assert main(["merge", "--adapter", str(tmp_path / "merged"), "--output", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --adapter: no adapter (adapter_config.json) in '{tmp_path / 'merged'}' "
                   "(hint: point to a folder written by save_adapter)"]
