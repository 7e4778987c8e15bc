"""The hf generator against plain ``model.generate``: greedy equality, batching, left padding, stop strings, eos,
n and seed, log-probs, adapters, chat prompts, continuous batching."""

from __future__ import annotations

import pytest
import torch

from oa_core.errors import OAError
from oa_core.generation import GenerationParams
from oa_infer.engines.hf import HFEngine, load_hf

PROMPTS = ["Hello there, how are", "The capital of France is a city that", "a", "one two three four five six",
           "Tell me"]


def plain_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own greedy continuation of one unpadded prompt."""
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_greedy_batches_equal_plain_generate_one_by_one(tiny_lm, chat_tok):
    engine = HFEngine(tiny_lm, chat_tok, batch_size=3)  # 5 prompts of different lengths: 2 left-padded batches
    encoded = [engine.encoder.encode(p) for p in PROMPTS]
    assert len({len(ids) for ids in encoded}) == len(PROMPTS)
    results = engine.generate(PROMPTS, GenerationParams(max_new_tokens=6))
    for ids, (completion,) in zip(encoded, results, strict=True):
        assert completion.token_ids == plain_greedy(tiny_lm, ids, 6)
        assert completion.text == chat_tok.decode(completion.token_ids, skip_special_tokens=True)
        assert completion.finish_reason == "length" and completion.logprobs is None
    one_by_one = HFEngine(tiny_lm, chat_tok, batch_size=1).generate(PROMPTS, GenerationParams(max_new_tokens=6))
    assert one_by_one == results
    no_cache = HFEngine(tiny_lm, chat_tok, batch_size=3, use_cache=False)
    assert no_cache.generate(PROMPTS, GenerationParams(max_new_tokens=6)) == results


def test_a_model_in_training_mode_generates_without_dropout_and_stays_in_training(tiny_llama_config, chat_tok):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(attention_dropout=0.5))
    model.train()
    engine = HFEngine(model, chat_tok)
    first = engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=4))
    assert model.training and engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=4)) == first
    assert [c.token_ids for (c,) in first] == [plain_greedy(model.eval(), engine.encoder.encode(p), 4)
                                               for p in PROMPTS[:2]]


def test_raw_text_prompts_start_with_bos_and_conversations_use_the_template(tiny_lm, chat_tok):
    engine = HFEngine(tiny_lm, chat_tok)
    assert engine.encoder.encode("Hi") == [chat_tok.bos_token_id, *chat_tok("Hi", add_special_tokens=False)["input_ids"]]
    chat = [{"role": "user", "content": "Hi"}]
    assert engine.encoder.text(chat) == "user: Hi\nassistant:"
    assert engine.encoder.encode(chat) == chat_tok("user: Hi\nassistant:", add_special_tokens=False)["input_ids"]
    (completion,), = engine.generate([chat], GenerationParams(max_new_tokens=3))
    assert completion.token_ids == plain_greedy(tiny_lm, engine.encoder.encode(chat), 3)


def test_a_conversation_without_a_chat_template_is_a_one_line_error(tiny_lm, llama_tok):
    engine = HFEngine(tiny_lm, llama_tok, source="the tokenizer in 'tok/'")
    with pytest.raises(OAError, match="the tokenizer in 'tok/' has no chat template") as e:
        engine.generate([[{"role": "user", "content": "Hi"}]], GenerationParams(max_new_tokens=2))
    assert "\n" not in str(e.value) and "hint:" in str(e.value)


def test_a_stop_string_across_several_tokens_ends_the_completion_before_it(tiny_lm, chat_tok):
    engine = HFEngine(tiny_lm, chat_tok, batch_size=4)
    free = engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=12))
    ids = free[0][0].token_ids
    a, b = (len(chat_tok.decode(ids[:k], skip_special_tokens=True)) for k in (1, 2))
    text = free[0][0].text
    stop = text[a - 1 : b + 1]  # last char of token 0, all of token 1, first char of token 2
    assert len(stop) >= 3 and text.find(stop) == a - 1
    results = engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=12, stop=["never there", stop]))
    first = results[0][0]
    assert first.token_ids == ids[:3] and first.text == text[: a - 1] and first.finish_reason == "stop"
    other = results[1][0]  # the other sequence of the batch runs on unless it meets the string itself
    if stop not in free[1][0].text:
        assert other == free[1][0]


def test_generation_stops_at_the_models_eos_tokens(tiny_lm, chat_tok):
    engine = HFEngine(tiny_lm, chat_tok)
    ids = engine.generate(["Hello"], GenerationParams(max_new_tokens=8))[0][0].token_ids
    saved = tiny_lm.generation_config.eos_token_id
    tiny_lm.generation_config.eos_token_id = [ids[2], chat_tok.eos_token_id]  # as oa-train saves [end of turn, eos]
    try:
        (done,), = HFEngine(tiny_lm, chat_tok).generate(["Hello"], GenerationParams(max_new_tokens=8))
    finally:
        tiny_lm.generation_config.eos_token_id = saved
    assert done.token_ids == ids[:3] and done.finish_reason == "stop"


def test_n_samples_are_reproducible_with_a_seed_and_leave_the_callers_rng_alone(tiny_lm, chat_tok):
    engine = HFEngine(tiny_lm, chat_tok, batch_size=8)
    params = GenerationParams(max_new_tokens=5, temperature=1.0, top_k=50, n=3, seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = engine.generate(PROMPTS[:3], params)
    assert torch.equal(torch.get_rng_state(), state)
    assert engine.generate(PROMPTS[:3], params) == first
    assert all(len(samples) == 3 for samples in first)
    assert len({tuple(c.token_ids) for c in first[0]}) > 1  # the n samples differ
    assert engine.generate(PROMPTS[:3], params.model_copy(update={"seed": 8})) != first
    greedy = engine.generate(PROMPTS[:3], GenerationParams(max_new_tokens=5, n=2))
    assert all(s[0] == s[1] for s in greedy)


def test_logprobs_are_log_softmax_of_the_models_logits(tiny_lm, chat_tok):
    engine = HFEngine(tiny_lm, chat_tok, batch_size=4)
    params = GenerationParams(max_new_tokens=5, temperature=0.7, top_k=20, repetition_penalty=1.3, seed=1,
                              logprobs=True, n=2)
    results = engine.generate(PROMPTS[:3], params)
    for prompt, samples in zip(PROMPTS[:3], results, strict=True):
        ids = engine.encoder.encode(prompt)
        for c in samples:
            full = torch.tensor([ids + c.token_ids])
            with torch.no_grad():
                logp = tiny_lm(full).logits[0].float().log_softmax(-1)
            want = [logp[len(ids) - 1 + k, t].item() for k, t in enumerate(c.token_ids)]
            assert c.logprobs == pytest.approx(want, abs=1e-4)


def lora_adapter(model, path, seed=0):
    """A LoRA adapter with non-zero weights (so it changes the outputs), saved at ``path``."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                                  init_lora_weights=False))
    peft_model.save_pretrained(path)
    return peft_model.eval()


def test_an_adapter_is_applied_to_the_base(tiny_lm, model_dir, tmp_path):
    in_memory = lora_adapter(tiny_lm, tmp_path / "adapter")
    engine = load_hf(model=model_dir, adapter=str(tmp_path / "adapter"), device="cpu", batch_size=2)
    base = load_hf(model=model_dir, device="cpu")
    params = GenerationParams(max_new_tokens=6)
    with_adapter = engine.generate(PROMPTS[:3], params)
    ids = [engine.encoder.encode(p) for p in PROMPTS[:3]]
    assert [r[0].token_ids for r in with_adapter] == [plain_greedy(in_memory, x, 6) for x in ids]
    assert with_adapter != base.generate(PROMPTS[:3], params)


def test_dtype_and_a_missing_adapter(model_dir, tmp_path):
    engine = load_hf(model=model_dir, dtype="bfloat16", device="cpu")
    assert engine.model.dtype == torch.bfloat16
    assert len(engine.generate(["Hi"], GenerationParams(max_new_tokens=2))[0][0].token_ids) == 2
    with pytest.raises(OAError, match=r"^adapter: no adapter \(adapter_config.json\) in"):
        load_hf(model=model_dir, adapter=str(tmp_path))


def test_continuous_batching_matches_plain_generate(tiny_lm, chat_tok):
    engine = HFEngine(tiny_lm, chat_tok, continuous_batching=True)
    attn = tiny_lm.config._attn_implementation
    params = GenerationParams(max_new_tokens=5, logprobs=True)
    results = engine.generate(PROMPTS[:3], params)
    assert tiny_lm.config._attn_implementation == attn  # the model is left as it was
    plain = HFEngine(tiny_lm, chat_tok).generate(PROMPTS[:3], params)
    for cb, ref in zip(results, plain, strict=True):
        assert cb[0].token_ids == ref[0].token_ids and cb[0].finish_reason == ref[0].finish_reason
        assert cb[0].logprobs == pytest.approx(ref[0].logprobs, abs=1e-4)
    sampled = GenerationParams(max_new_tokens=4, temperature=1.0, n=2, seed=3)
    state = torch.get_rng_state()
    first = engine.generate(PROMPTS[:2], sampled)
    assert torch.equal(torch.get_rng_state(), state)
    assert [len(s) for s in first] == [2, 2] and engine.generate(PROMPTS[:2], sampled) == first
    with pytest.raises(OAError, match="repetition_penalty: not supported with continuous batching"):
        engine.generate(PROMPTS[:1], GenerationParams(repetition_penalty=1.2))


def test_compiled_decoding_equals_eager_pads_widths_and_sees_weight_updates(tiny_lm, chat_tok):
    import torch._dynamo

    from oa_infer.engines.hf import bucket_width

    torch._dynamo.reset()
    params = GenerationParams(max_new_tokens=5, logprobs=True)
    eager = HFEngine(tiny_lm, chat_tok, batch_size=2).generate(PROMPTS[:4], params)
    engine = HFEngine(tiny_lm, chat_tok, batch_size=2, compile=True)
    widths = []
    real = tiny_lm.generate

    def spy(**kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        assert kwargs["generation_config"].cache_implementation == "static"
        return real(**kwargs)

    tiny_lm.generate = spy
    try:
        compiled = engine.generate(PROMPTS[:4], params)
    finally:
        del tiny_lm.generate
    assert engine.compile and widths and all(w == bucket_width(w) for w in widths)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the decoding step was compiled
    for c, e in zip(compiled, eager, strict=True):  # left padding up to the bucket changes no token
        assert c[0].token_ids == e[0].token_ids and c[0].finish_reason == e[0].finish_reason
        assert c[0].logprobs == pytest.approx(e[0].logprobs, abs=1e-4)
    # a trainer updates the weights in place between generations: the compiled step must see the new ones
    saved = {k: v.clone() for k, v in tiny_lm.state_dict().items()}
    try:
        with torch.no_grad():
            for w in tiny_lm.parameters():
                w.add_(torch.randn_like(w) * 0.05)
        again = engine.generate(PROMPTS[:4], params)
        fresh = HFEngine(tiny_lm, chat_tok, batch_size=2).generate(PROMPTS[:4], params)
    finally:
        tiny_lm.load_state_dict(saved)
    assert [c[0].token_ids for c in again] == [c[0].token_ids for c in fresh] != [c[0].token_ids for c in eager]


def test_compiled_decoding_falls_back_to_eager_with_a_warning(tiny_lm, chat_tok, monkeypatch):
    import oa_infer.engines.hf as hf

    def broken(device):
        raise RuntimeError("no compiler here\nmore lines")

    monkeypatch.setattr(hf, "_compile_config", broken)
    engine = HFEngine(tiny_lm, chat_tok, compile=True)
    with pytest.warns(UserWarning, match=r"compiled decoding failed \(RuntimeError: no compiler here\); generating "
                                         r"without it"):
        got = engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=4))
    assert not engine.compile
    assert got == HFEngine(tiny_lm, chat_tok).generate(PROMPTS[:2], GenerationParams(max_new_tokens=4))


def test_bucket_widths_are_powers_of_two_from_64():
    from oa_infer.engines.hf import bucket_width

    assert [bucket_width(w) for w in (1, 63, 64, 65, 128, 129, 700)] == [64, 64, 64, 128, 128, 256, 1024]


def test_compile_setting_auto_means_on_a_gpu_and_excludes_continuous_batching(tiny_lm, chat_tok):
    from oa_infer.engines.hf import HFSettings, compile_wanted

    assert compile_wanted("auto", torch.device("cuda", 0), False) is True
    assert compile_wanted("auto", torch.device("cpu"), False) is False
    assert compile_wanted("auto", torch.device("cuda", 0), True) is False
    assert compile_wanted(True, torch.device("cpu"), False) is True
    with pytest.raises(ValueError, match="compile: true and continuous_batching: true exclude each other"):
        HFSettings(model="m", compile=True, continuous_batching=True)
    assert not HFEngine.from_settings(tiny_lm, chat_tok, HFSettings(model="m"), source="t").compile  # CPU: auto off
    with pytest.raises(OAError, match="compile and continuous_batching: choose one"):
        HFEngine(tiny_lm, chat_tok, compile=True, continuous_batching=True)
