"""Rollout engines. vLLM is not installed here: a fake engine with vLLM's API (``LLM(**kwargs)``, ``generate``,
``llm_engine.model_executor.driver_worker.model_runner.model.load_weights``, ``reset_prefix_cache``) keeps its own
copy of the weights, as vLLM does, and samples from it with transformers. The policy's weights are pushed into it
before every generation that follows an update — LoRA merged into them —, and the log-prob mismatch the run logs
shows when they are not. Under PEFT the KL reference is the model with its adapters disabled."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from oa_cli.main import main


class FakeModel:
    """The model inside vLLM: ``load_weights([(name, tensor)])`` copies into its own weights."""

    def __init__(self, net):
        self.net, self.loads = net, 0

    def load_weights(self, weights):
        params = dict(self.net.named_parameters())
        for name, tensor in weights:
            params[name].data.copy_(tensor)
            self.loads += 1


class FakeLLM:
    """``vllm.LLM`` with its own copy of the model at ``model`` (sampled with transformers' generate)."""

    made: list = []

    def __init__(self, **kwargs):
        from transformers import AutoTokenizer, LlamaForCausalLM

        self.kwargs = kwargs
        self.net = LlamaForCausalLM.from_pretrained(kwargs["model"]).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs["model"])
        self.model = FakeModel(self.net)
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=SimpleNamespace(model=self.model))))
        self.resets, self.generations = 0, 0
        FakeLLM.made.append(self)

    def reset_prefix_cache(self):
        self.resets += 1

    @torch.no_grad()
    def generate(self, requests, sampling_params, *, use_tqdm=True, lora_request=None):
        p = sampling_params.kwargs
        self.generations += 1
        results = []
        for r, request in enumerate(requests):
            ids = torch.tensor([request["prompt_token_ids"]])
            with torch.random.fork_rng():
                torch.manual_seed(p["seed"] + r)
                out = self.net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                        temperature=p["temperature"], top_k=0, max_new_tokens=p["max_tokens"],
                                        num_return_sequences=p["n"], eos_token_id=p["stop_token_ids"], pad_token_id=0,
                                        output_logits=True, return_dict_in_generate=True)
            logps = torch.stack(out.logits, 1).float().log_softmax(-1)
            outputs = []
            for i, row in enumerate(out.sequences[:, ids.shape[1]:].tolist()):
                end = next((k + 1 for k, t in enumerate(row) if t in p["stop_token_ids"]), len(row))
                tokens = row[:end]
                outputs.append(SimpleNamespace(
                    index=i, token_ids=tokens, text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                    finish_reason="stop" if end < len(row) or tokens[-1] in p["stop_token_ids"] else "length",
                    logprobs=[{t: SimpleNamespace(logprob=float(logps[i, k, t]))} for k, t in enumerate(tokens)]))
            results.append(SimpleNamespace(outputs=outputs))
        return results


@pytest.fixture
def fake_vllm(monkeypatch):
    from oa_train.grpo import checks, rollout

    FakeLLM.made = []
    api = SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kw: SimpleNamespace(kwargs=kw),
                          LoRARequest=lambda *a: SimpleNamespace(args=a))
    monkeypatch.setattr(rollout, "import_vllm_colocated", lambda: api)
    monkeypatch.setattr(checks, "vllm_installed", lambda: True)
    return FakeLLM


def test_vllm_rollouts_sync_the_policy_before_each_generation(toy_rewards, grpo_config, records, tmp_path, fake_vllm,
                                                              digit_model_dir):
    assert main(["train", grpo_config("vllm", generator="vllm", max_steps=3,
                                      vllm={"gpu_memory_utilization": 0.5})]) == 0
    (llm,) = fake_vllm.made
    assert llm.kwargs["model"] == digit_model_dir and llm.kwargs["gpu_memory_utilization"] == 0.5
    assert llm.kwargs["logprobs_mode"] == "raw_logprobs" and llm.kwargs["seed"] == 0
    assert llm.generations == 3 and llm.resets == 3  # a sync (and a cache reset) before each generation
    assert llm.model.loads == 3 * len(list(llm.net.parameters()))
    logged = records(tmp_path / "vllm")
    assert all(r["logprob_mismatch/max"] < 1e-4 for r in logged)  # it samples from the policy's very weights
    assert logged[-1]["reward"] >= 0 and "rewards/toy.copy_digit/mean" in logged[-1]
    final = {k: v for k, v in llm.net.named_parameters()}
    from safetensors.torch import load_file

    trained = load_file(str(tmp_path / "vllm" / "model" / "model.safetensors"))
    assert not torch.equal(final["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])  # one update behind


def test_the_mismatch_shows_a_generator_that_was_not_synced(toy_rewards, grpo_config, records, tmp_path, fake_vllm,
                                                            monkeypatch):
    from oa_train.grpo.rollout import VLLMRollout

    sync = VLLMRollout.sync
    monkeypatch.setattr(VLLMRollout, "sync", lambda self, net: sync(self, net) if self.syncs == 0 else None)
    assert main(["train", grpo_config("stale", generator="vllm", max_steps=3)]) == 0
    gaps = [r["logprob_mismatch/max"] for r in records(tmp_path / "stale")]
    assert gaps[0] < 1e-4 and gaps[2] > 1e-2  # the policy moved on; the generator did not


def test_lora_weights_are_merged_into_what_vllm_gets(digit_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from oa_train.grpo.rollout import policy_weights

    base = LlamaForCausalLM.from_pretrained(digit_model_dir)
    names = {n for n, _ in base.named_parameters()}
    net = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                         modules_to_save=["down_proj"]))
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(0.1)
    merged = copy.deepcopy(net).merge_and_unload()
    pushed = {name: tensor.clone() for name, tensor in policy_weights(net)}  # as load_weights copies them
    assert set(pushed) == names
    for name, tensor in merged.named_parameters():
        torch.testing.assert_close(pushed[name], tensor, msg=name)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(pushed[q], base.state_dict()[q])
    inner = net.get_base_model().model.layers[0].self_attn.q_proj
    assert not inner.merged  # unmerged again (to float rounding: merging adds B·A, unmerging subtracts it)
    torch.testing.assert_close(inner.base_layer.weight, base.state_dict()[q], rtol=0, atol=1e-6)


def test_under_peft_the_reference_is_the_model_without_its_adapters(toy_rewards, grpo_config, records, tmp_path):
    """LoRA starts as the identity (B = 0): the KL to the reference is 0 at the first step and grows after."""
    from oa_core.config import load_config
    from oa_train.grpo.objective import GRPOObjective
    from oa_train.training.loop import Loop

    objective = GRPOObjective()
    path = grpo_config("lora", max_steps=3, beta=0.1, learning_rate=5e-2, top={"peft": {"method": "lora", "r": 4}})
    Loop(load_config(path), objective).run()
    assert objective.reference is None  # no copy of the model: its adapters are switched off instead
    kl = [r["kl"] for r in records(tmp_path / "lora")]
    assert kl[0] == 0.0 and kl[2] > 1e-5


def test_compiled_decoding_is_off_under_zero3():
    """ZeRO-3 gathers the weights anew for every generation, so a captured decoding graph would read stale memory:
    compile auto means off there, true is refused; other set-ups keep the setting."""
    from oa_core.errors import OAError
    from oa_train.grpo.config import HFRolloutSettings
    from oa_train.grpo.rollout import _without_compile_under_zero3

    def accelerator(stage):
        plugin = None if stage is None else SimpleNamespace(zero_stage=stage)
        return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin))

    auto, on = HFRolloutSettings(), HFRolloutSettings(compile=True)
    assert _without_compile_under_zero3(auto, accelerator(3)).compile is False
    assert _without_compile_under_zero3(auto, accelerator(2)).compile == "auto"
    assert _without_compile_under_zero3(on, accelerator(None)).compile is True
    with pytest.raises(OAError, match="train.hf.compile: compiled decoding is not supported under DeepSpeed ZeRO-3"):
        _without_compile_under_zero3(on, accelerator(3))


def test_fsdp_is_refused_before_anything_is_built():
    """Under FSDP each layer's weights are gathered collectively, and processes generating different numbers of
    tokens would wait for each other forever: one error instead of a hang."""
    from accelerate.utils import DistributedType

    from oa_core.errors import OAError
    from oa_train.grpo.objective import GRPOObjective

    run = SimpleNamespace(accelerator=SimpleNamespace(distributed_type=DistributedType.FSDP))
    with pytest.raises(OAError, match="method grpo: not supported under FSDP") as e:
        GRPOObjective().setup(run)
    assert "zero3.yaml" in e.value.hint
