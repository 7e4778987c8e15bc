"""Rollouts: completions sampled from the policy being trained, through oa-infer's generators.

- ``hf`` (:class:`HFRollout`): oa-infer's :class:`~oa_infer.engines.hf.HFEngine` on the very model being trained
  (full or PEFT), so it always samples from the current weights;
- ``vllm`` (:class:`VLLMRollout`): a vLLM engine in the training process (colocated), behind oa-infer's
  :class:`~oa_infer.engines.vllm.VLLMEngine`. vLLM keeps its own copy of the weights, so the policy's weights are
  pushed into it before the first generation after an update (:func:`policy_weights`: a LoRA adapter is merged into
  the pushed weights and unmerged again, as TRL does). ``api`` and ``llm`` are seams: the tests pass a fake engine
  with vLLM's API.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from oa_core.errors import OAError
from oa_core.generation import Completion, GenerationParams, Prompt


class HFRollout:
    """Generation with transformers on the model being trained."""

    name = "hf"
    logprobs_mode = "raw"  # the engine's log-probs: log-softmax of the raw logits

    def __init__(self, tokenizer: Any, settings: Any):
        self.tokenizer, self.settings = tokenizer, settings
        self.engine = None

    def generate(self, net: Any, prompts: Sequence[Prompt], params: GenerationParams) -> list[list[Completion]]:
        from oa_infer.engines.hf import HFEngine

        if self.engine is None or self.engine.model is not net:
            self.engine = HFEngine.from_settings(net, self.tokenizer, self.settings, source="the run's tokenizer")
        return self.engine.generate(prompts, params)

    def updated(self) -> None:
        """The policy's weights changed (nothing to do: generate reads them)."""


def import_vllm_colocated() -> Any:
    """vLLM's ``LLM``, ``SamplingParams`` and ``LoRARequest``, or a one-line error naming the extra."""
    from oa_infer.engines.vllm import import_vllm

    return import_vllm()


class VLLMRollout:
    """Generation with a vLLM engine in this process, its weights synced from the policy before each generation
    that follows an update."""

    name = "vllm"
    logprobs_mode = "raw"

    def __init__(self, tokenizer: Any, settings: Any, *, model_path: str, eos_ids: Sequence[int], seed: int,
                 max_model_len: int | None, dtype: str = "auto", trust_remote_code: bool = False, api: Any = None,
                 llm: Any = None):
        from oa_infer.engines.vllm import VLLMEngine

        self.api = api if api is not None else import_vllm_colocated()
        self.llm = llm if llm is not None else self.api.LLM(
            model=model_path, tokenizer=model_path, dtype=dtype, trust_remote_code=trust_remote_code,
            gpu_memory_utilization=settings.gpu_memory_utilization, max_model_len=max_model_len,
            enforce_eager=settings.enforce_eager, logprobs_mode="raw_logprobs", seed=seed,
            distributed_executor_backend="external_launcher", **settings.engine_kwargs)
        self.engine = VLLMEngine(self.llm, tokenizer, eos_ids=eos_ids, api=self.api, source="the run's tokenizer")
        self.stale = True  # vLLM loaded model_path: the policy may differ already (an adapter, a resumed run)
        self.syncs = 0

    def generate(self, net: Any, prompts: Sequence[Prompt], params: GenerationParams) -> list[list[Completion]]:
        if self.stale:
            self.sync(net)
        return self.engine.generate(prompts, params)

    def updated(self) -> None:
        self.stale = True

    def sync(self, net: Any) -> None:
        """Push every weight of the policy into vLLM's model, then drop vLLM's prefix cache (its keys/values were
        computed with the old weights)."""
        target = vllm_model(self.llm)
        for name, tensor in policy_weights(net):
            target.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()
        self.stale = False
        self.syncs += 1


def vllm_model(llm: Any) -> Any:
    """The model inside a colocated vLLM ``LLM`` whose ``load_weights`` takes ``[(name, tensor)]`` (where TRL 1.16
    finds it)."""
    try:
        return llm.llm_engine.model_executor.driver_worker.model_runner.model
    except AttributeError:
        raise OAError("generator vllm: this vLLM version keeps its model where oa does not look "
                      "(llm.llm_engine.model_executor.driver_worker.model_runner.model)",
                      hint="use the vLLM version oa-infer's vllm extra pins, or generator: hf") from None


def policy_weights(net: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every weight of the policy under the names of the plain transformers model. A PEFT
    model's adapters are merged for the duration (and unmerged after): ``base_model.model.`` and ``.base_layer``
    leave the names, adapter weights and the originals of ``modules_to_save`` are skipped. The tensors are the live
    weights: copy them before the iteration ends (the adapters are unmerged then)."""
    if not hasattr(net, "merge_adapter"):
        for name, param in net.named_parameters():
            yield name, param.data
        return
    prefix = getattr(net, "prefix", "lora_")
    net.merge_adapter()
    try:
        for name, param in net.named_parameters():
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if prefix in name or "original_module" in name:
                continue
            yield name.replace("modules_to_save.default.", ""), param.data
    finally:
        net.unmerge_adapter()


def make_rollout(run: Any, *, api: Any = None, llm: Any = None):
    """The rollout engine ``train.generator`` names for ``run`` (a :class:`oa_train.training.objective.Run`)."""
    tc = run.train
    tokenizer = run.tokenizer.tokenizer
    if tc.generator == "hf":
        return HFRollout(tokenizer, _without_compile_under_zero3(tc.hf, run.accelerator))
    from oa_infer.engines import eos_token_ids

    net = run.model
    base = net.get_base_model() if hasattr(net, "get_base_model") else net
    if run.model_manifest.get("resized_embeddings_to") or run.config.model.random_init:
        raise OAError("train.generator: vllm loads the weights saved at model.path, and this policy differs in shape "
                      "(random_init, or tokens added to its vocabulary)",
                      hint="start from a saved model that has the tokens (e.g. the output of oa train sft), or use "
                      "generator: hf")
    max_len = tc.vllm.max_model_len
    if max_len is None and tc.max_prompt_length is not None:
        max_len = tc.max_prompt_length + tc.max_completion_length
    return VLLMRollout(tokenizer, tc.vllm, model_path=run.config.model.path, eos_ids=eos_token_ids(base, tokenizer),
                       seed=run.accelerator.process_index, max_model_len=max_len, dtype=run.config.model.dtype,
                       trust_remote_code=run.config.model.trust_remote_code, api=api, llm=llm)


def _without_compile_under_zero3(settings: Any, accelerator: Any) -> Any:
    """Under ZeRO-3 the weights are gathered anew for every generation, so a captured decoding graph would read
    the last gather's memory: ``compile: auto`` means off there, and ``true`` is refused."""
    from oa_train.training.sharding import zero_stage

    if zero_stage(accelerator) != 3 or settings.compile is False:
        return settings
    if settings.compile is True:
        raise OAError("train.hf.compile: compiled decoding is not supported under DeepSpeed ZeRO-3 (the weights are "
                      "gathered anew for every generation)", hint="set train.hf.compile: auto or false")
    return settings.model_copy(update={"compile": False})
