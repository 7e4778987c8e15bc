"""The vllm generator's mapping onto vLLM's API, on CPU: a fake engine with vLLM's ``LLM.generate`` and
``RequestOutput``/``CompletionOutput`` shapes stands in for vLLM (not installed here)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from oa_core.errors import OAError
from oa_core.generation import GenerationParams
from oa_core.plugins import get_registry
from oa_infer.engines import vllm as vllm_engine
from oa_infer.engines.vllm import VLLMEngine, VLLMSettings, load_vllm


class FakeSamplingParams:
    """Records its keyword arguments, as vllm.SamplingParams takes them."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeLLM:
    """``LLM.generate(prompts, sampling_params, *, use_tqdm, lora_request)``: per prompt, ``n`` outputs (listed in
    reverse ``index`` order) whose tokens are the prompt's last tokens, with logprobs as vLLM gives them
    (``{token_id: Logprob}`` per position, the sampled token plus a top alternative)."""

    def __init__(self, decoder=None, finish_reasons=("stop", "length"), **kwargs):
        self.decoder, self.finish_reasons, self.kwargs, self.calls = decoder, finish_reasons, kwargs, []

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append(SimpleNamespace(prompts=prompts, sampling_params=sampling_params, use_tqdm=use_tqdm,
                                          lora_request=lora_request))
        n = sampling_params.kwargs["n"]
        results = []
        for p, prompt in enumerate(prompts):
            outputs = []
            for i in reversed(range(n)):
                ids = prompt["prompt_token_ids"][-(i + 2):]
                logprobs = [{t: SimpleNamespace(logprob=-0.5 * (k + 1) - i), 7: SimpleNamespace(logprob=-9.0)}
                            for k, t in enumerate(ids)]
                outputs.append(SimpleNamespace(index=i, text=self.decoder.decode(ids), token_ids=tuple(ids),
                                               finish_reason=self.finish_reasons[(p + i) % 2],
                                               logprobs=logprobs if sampling_params.kwargs["logprobs"] == 0 else None))
            results.append(SimpleNamespace(prompt=None, prompt_token_ids=prompt["prompt_token_ids"], outputs=outputs))
        return results


FAKE_API = SimpleNamespace(SamplingParams=FakeSamplingParams, LoRARequest=FakeLoRARequest, LLM=FakeLLM)


def test_generation_params_map_one_to_one_onto_sampling_params(chat_tok):
    llm = FakeLLM(chat_tok)
    engine = VLLMEngine(llm, chat_tok, eos_ids=[5, 2], adapter="/adapters/a", api=FAKE_API)
    params = GenerationParams(max_new_tokens=33, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1, n=2,
                              seed=5, stop=["\nuser:", "###"], logprobs=True)
    prompts = ["Hello there", [{"role": "user", "content": "Hi"}]]
    results = engine.generate(prompts, params)
    (call,) = llm.calls
    assert call.sampling_params.kwargs == dict(
        n=2, max_tokens=33, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=5,
        stop=["\nuser:", "###"], include_stop_str_in_output=False, stop_token_ids=[5, 2], logprobs=0,
        skip_special_tokens=True)
    assert call.prompts == [{"prompt_token_ids": engine.encoder.encode(p)} for p in prompts]
    assert call.prompts[1]["prompt_token_ids"] == chat_tok("user: Hi\nassistant:", add_special_tokens=False)["input_ids"]
    assert (call.lora_request.lora_name, call.lora_request.lora_int_id, call.lora_request.lora_path) == \
        ("adapter", 1, "/adapters/a")
    assert call.use_tqdm is False
    for p, samples in enumerate(results):  # outputs back in index order, finish reasons and logprobs mapped
        ids = call.prompts[p]["prompt_token_ids"]
        for i, c in enumerate(samples):
            assert c.token_ids == ids[-(i + 2):] and c.text == chat_tok.decode(ids[-(i + 2):])
            assert c.finish_reason == ("stop", "length")[(p + i) % 2]
            assert c.logprobs == [-0.5 * (k + 1) - i for k in range(i + 2)]


def test_without_logprobs_or_adapter(chat_tok):
    llm = FakeLLM(chat_tok, finish_reasons=("abort", "stop"))
    engine = VLLMEngine(llm, chat_tok, api=FAKE_API)
    (c,), = engine.generate(["Hi"], GenerationParams())
    assert llm.calls[0].lora_request is None and llm.calls[0].sampling_params.kwargs["logprobs"] is None
    assert llm.calls[0].sampling_params.kwargs["temperature"] == 0.0  # greedy in vLLM too
    assert c.logprobs is None and c.finish_reason == "stop"
    assert engine.generate([], GenerationParams()) == [] and len(llm.calls) == 1


def test_load_vllm_builds_the_engine_from_settings(model_dir, tmp_path, monkeypatch):
    import shutil

    from transformers import GenerationConfig

    monkeypatch.setattr(vllm_engine, "import_vllm", lambda: FAKE_API)
    model = shutil.copytree(model_dir, tmp_path / "m")
    GenerationConfig(eos_token_id=[13, 2]).save_pretrained(model)  # as oa-train saves [end of turn, eos]
    engine = load_vllm(VLLMSettings(model=str(model), tensor_parallel_size=2, dtype="bfloat16",
                                    engine_kwargs={"max_num_seqs": 8}))
    assert engine.eos_ids == [13, 2]
    assert engine.llm.kwargs == dict(
        model=str(model), tokenizer=str(model), tensor_parallel_size=2, dtype="bfloat16", trust_remote_code=False,
        gpu_memory_utilization=0.9, max_model_len=None, enforce_eager=False, logprobs_mode="raw_logprobs",
        max_num_seqs=8)
    assert engine.lora_request is None


def test_load_vllm_with_an_adapter(model_dir, tmp_path, monkeypatch, chat_tok):
    monkeypatch.setattr(vllm_engine, "import_vllm", lambda: FAKE_API)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM"}))
    engine = load_vllm(model=model_dir, adapter=str(adapter), max_lora_rank=16)
    assert engine.llm.kwargs["enable_lora"] is True and engine.llm.kwargs["max_lora_rank"] == 16
    assert engine.lora_request.lora_path == str(adapter)
    chat_tok.add_tokens(["<new-token>"])  # an adapter trained with added tokens: vLLM's LoRA cannot load it
    chat_tok.save_pretrained(adapter)
    with pytest.raises(OAError, match=r"^adapter: .* was trained with 1 tokens added to the vocabulary.*merge"):
        load_vllm(model=model_dir, adapter=str(adapter))


def test_vllm_not_installed_is_a_one_line_error_naming_the_extra(model_dir):
    with pytest.raises(OAError) as e:
        get_registry().get("generator", "vllm").load(VLLMSettings(model=model_dir))
    message = str(e.value)
    assert message.startswith("generator 'vllm': vLLM is not installed") and "\n" not in message
    assert "pip install 'oa-infer[vllm]'" in message
