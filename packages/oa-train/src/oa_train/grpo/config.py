"""The ``train:`` section of ``method: grpo``: the loop's options plus rollouts, rewards and the policy loss.
Pure pydantic: no torch at import.

Batch arithmetic (checked when the config loads; see :func:`oa_train.grpo.checks.check_grpo`):

- ``per_device_batch_size`` counts **completions** (TRL's ``per_device_train_batch_size``): a micro-batch trains
  that many completions on each process;
- one optimizer step trains ``per_device_batch_size × gradient_accumulation_steps × processes`` completions: the
  *generation batch* (TRL's ``generation_batch_size`` with ``steps_per_generation = gradient_accumulation_steps``);
- they are ``num_generations`` completions of each of ``per_device_batch_size × gradient_accumulation_steps /
  num_generations`` prompts per process, so that product must divide by ``num_generations`` (every prompt's group is
  generated, scored and normalised on one process);
- ``num_iterations`` optimizer steps train on each generation batch (μ in the GRPO paper), the first with fresh
  completions, the others with the log-probs of the policy that generated them as the old policy.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from oa_core.config import RegistryRef
from oa_infer.engines.hf import CompiledDecoding
from oa_train.training.config import LoopConfig


class RewardSpec(BaseModel):
    """One reward function of the weighted sum that scores each completion."""

    model_config = ConfigDict(extra="forbid")

    function: Annotated[str, RegistryRef("reward_function")] = Field(
        description="a registered reward function (oa plugins list --kind reward_function): numeric_answer, regex, "
        "length, reward_model, or a plugin's")
    weight: float = Field(1.0, description="its weight in the sum of rewards (negative: a penalty)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="the function's options (checked against its options model when the config "
        "loads), e.g. {pattern: '...'} for regex or {path: runs/rm/model} for reward_model")
    name: str | None = Field(None, description="the name its metrics are logged under (default: the function's name; "
                             "needed to use one function twice)")

    @property
    def label(self) -> str:
        return self.name or self.function


class HFRolloutSettings(CompiledDecoding):
    """Rollouts with transformers' ``generate`` on the model being trained (oa-infer's ``hf`` engine)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1, description="sequences generated together (prompts × num_generations)")
    use_cache: bool = Field(True, description="keep the keys/values of earlier tokens (KV cache)")
    continuous_batching: bool = Field(
        False, description="transformers' continuous batching (a paged KV cache refilled as sequences finish, no "
        "padding); stop strings are cut afterwards, no repetition_penalty")


class VLLMRolloutSettings(BaseModel):
    """Rollouts with vLLM in the training process (colocated), its weights replaced by the policy's before every
    generation."""

    model_config = ConfigDict(extra="forbid")

    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of GPU memory vLLM may take (the rest "
                                          "is the trainer's)")
    max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion vLLM plans for (default: "
                                      "max_prompt_length + max_completion_length when both are known)")
    enforce_eager: bool = Field(False, description="no CUDA graphs (less memory, slower)")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more keyword arguments for vllm.LLM")


class GRPOConfig(LoopConfig):
    """Options of GRPO (group-relative policy optimisation) and its variants (DAPO, Dr. GRPO, GSPO): completions
    sampled from the policy, scored by reward functions, trained with a clipped surrogate on group-relative
    advantages."""

    # batch arithmetic (module docstring)
    per_device_batch_size: int = Field(
        8, ge=1, description="completions per micro-batch per device (TRL's per_device_train_batch_size); "
        "per_device_batch_size × gradient_accumulation_steps must be a multiple of num_generations")
    per_device_eval_batch_size: int | None = Field(
        None, ge=1, description="eval prompts generated for together per device (one completion each); default: "
        "per_device_batch_size / num_generations")
    num_generations: int = Field(
        8, ge=2, description="completions sampled per prompt (G): the group its advantages are relative to")
    num_iterations: int = Field(
        1, ge=1, description="optimizer steps on each generation batch (μ in the GRPO paper); > 1 keeps the "
        "log-probs of the generating policy as the old policy of the ratio")

    # generation
    max_completion_length: int = Field(256, ge=1, description="longest completion (tokens)")
    max_prompt_length: int | None = Field(
        None, ge=1, description="longer prompts are dropped and counted (default: the model's positions minus "
        "max_completion_length, when the model's config says)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature; the policy's log-probs are those of the "
                               "logits / temperature too (as TRL)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (1: off)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens (0: off)")
    repetition_penalty: float = Field(1.0, gt=0, description="penalty for tokens already in the text (1: none)")
    stop: list[str] = Field(default_factory=list, description="strings that end a completion (besides eos and the "
                            "chat template's end of turn); the completion keeps the token that completes one")
    generator: Literal["hf", "vllm"] = Field(
        "hf", description="hf: transformers generate on the model being trained (CPU or GPU); vllm: vLLM in the "
        "training process, weights synced from the policy before each generation (GPU, pip install "
        "'oa-infer[vllm]')")
    hf: HFRolloutSettings = Field(default_factory=HFRolloutSettings, description="options of generator hf")
    vllm: VLLMRolloutSettings = Field(default_factory=VLLMRolloutSettings, description="options of generator vllm")
    logprob_mismatch: Literal["auto", "on", "off"] = Field(
        "auto", description="measure the gap between the generator's and the trainer's log-probs of the sampled "
        "tokens (logged as logprob_mismatch/mean and /max; temperature 1 only): auto = on with vllm, off with hf "
        "(whose generate would keep every step's logits for it)")

    # rewards
    rewards: list[RewardSpec] = Field(
        default_factory=list, description="reward functions summed with their weights into each completion's reward "
        "(at least one)")
    reward_timeout: float | None = Field(
        60.0, gt=0, description="seconds a reward function may take for one call; a call that takes longer is left "
        "out (its completions get no score from it) and reported (null: no limit)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="advantage = (reward - group mean) / std: the std of the group (GRPO), of the whole "
        "generation batch (batch), or no division (none, Dr. GRPO)")

    # loss
    loss_type: Annotated[str, RegistryRef("loss")] = Field(
        "dapo", description="a registered loss of family 'grpo' (oa plugins list --kind loss): grpo (per-sequence "
        "mean), bnpo (per micro-batch token mean), dr_grpo (token sum / max_completion_length), dapo (token mean over "
        "the generation batch), or a plugin's")
    beta: float = Field(0.0, ge=0, description="weight of the KL penalty to the reference policy (k3 estimator); 0: "
                        "no reference is loaded. The reference is the model with its adapters disabled under PEFT, "
                        "else a frozen copy of the initial model")
    epsilon: float = Field(0.2, ge=0, description="clipping range of the ratio: [1 - epsilon, 1 + epsilon_high]")
    epsilon_high: float | None = Field(None, ge=0, description="upper clipping range (DAPO's clip-higher, e.g. 0.28); "
                                       "default: epsilon")
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token", description="token: one ratio per token; sequence: one per completion, exp of the mean log-ratio "
        "(GSPO)")
    mask_truncated_completions: bool = Field(
        False, description="completions cut at max_completion_length count in no loss term (DAPO's overlong "
        "filtering); they still count in the group statistics")

    # logging and evaluation
    log_completions_steps: int = Field(
        10, ge=0, description="every N steps, the completions of the step (prompt, completion, rewards, advantage) are "
        "appended to completions.jsonl and the first few printed (0: never)")
    num_completions_to_print: int = Field(2, ge=0, description="completions printed at each log_completions_steps")
    eval_temperature: float = Field(0.0, ge=0, description="temperature of the one completion per eval prompt "
                                    "(0: greedy)")
    metric_for_best: str = Field("eval_reward", description="eval metric ranking checkpoints (GRPO logs eval_reward "
                                 "and eval_reward_<name> for every reward function)")

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("an empty stop string would end every completion at once")
        return v

    @property
    def clip_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

    def prompts_per_step(self) -> float:
        """Prompts per process per optimizer step (whole when the batch arithmetic is right)."""
        return self.per_device_batch_size * self.gradient_accumulation_steps / self.num_generations

