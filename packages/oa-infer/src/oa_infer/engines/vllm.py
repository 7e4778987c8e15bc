"""The ``vllm`` generator: vLLM's offline ``LLM`` (tensor parallel, LoRA adapters through ``LoRARequest``).

vLLM is an optional extra (``pip install 'oa-infer[vllm]'``), imported only when an engine is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from pydantic import Field

from oa_core.errors import OAError
from oa_core.generation import Completion, GenerationParams, GeneratorSettings, Prompt
from oa_infer.prompts import PromptEncoder

ADAPTER_NAME = "adapter"


class VLLMSettings(GeneratorSettings):
    """The ``vllm`` generator: vLLM's offline engine."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is split over (tensor parallelism)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of GPU memory vLLM may take")
    max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion (default: the model's)")
    max_lora_rank: int = Field(64, ge=1, description="largest LoRA rank the engine reserves room for (with `adapter`)")
    enforce_eager: bool = Field(False, description="no CUDA graphs (less memory, slower)")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more keyword arguments for vllm.LLM")


def import_vllm() -> Any:
    """The ``vllm`` package, or a one-line error naming the extra that installs it."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise OAError(f"generator 'vllm': vLLM is not installed ({e.name or 'vllm'} cannot be imported)",
                      hint="pip install 'oa-infer[vllm]' on a CUDA machine, or use generator hf") from None
    return SimpleNamespace(LLM=vllm.LLM, SamplingParams=vllm.SamplingParams, LoRARequest=LoRARequest)


class VLLMEngine:
    """vLLM generation as an :class:`oa_core.generation.Engine`.

    Prompts are rendered and tokenized by oa (:class:`~oa_infer.prompts.PromptEncoder`, as the ``hf`` engine
    does) and handed to vLLM as token ids. :class:`GenerationParams` map one to one onto ``SamplingParams``
    (``max_new_tokens`` -> ``max_tokens``, ``logprobs`` -> ``logprobs=0``: the sampled token's; stop strings are
    matched by vLLM on the decoded text and left out of it); ``eos_ids`` become ``stop_token_ids``. vLLM reports
    log-probs of the model's raw distribution (its default ``logprobs_mode="raw_logprobs"``, set explicitly by
    :func:`load_vllm`), as the ``hf`` engine does.

    The seam: ``llm`` is anything with vLLM's ``LLM.generate(prompts, sampling_params, *, use_tqdm, lora_request)``
    returning ``RequestOutput``-like objects (``.outputs[i]`` with ``index``, ``text``, ``token_ids``,
    ``finish_reason``, ``logprobs``: one ``{token_id: Logprob(logprob=...)}`` per token), and ``api`` anything
    with vLLM's ``SamplingParams`` and ``LoRARequest`` classes (default: the installed vLLM). Tests pass fakes.
    """

    def __init__(self, llm: Any, tokenizer: Any, *, eos_ids: Sequence[int] = (), adapter: str | None = None,
                 api: Any = None, source: str = "the tokenizer"):
        self.llm = llm
        self.tokenizer = tokenizer
        self.api = api if api is not None else import_vllm()
        self.encoder = PromptEncoder(tokenizer, source)
        self.eos_ids = [int(i) for i in eos_ids]
        self.lora_request = self.api.LoRARequest(ADAPTER_NAME, 1, adapter) if adapter else None

    def sampling_params(self, params: GenerationParams) -> Any:
        """``params`` as vLLM ``SamplingParams``."""
        return self.api.SamplingParams(
            n=params.n, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
            top_k=params.top_k, repetition_penalty=params.repetition_penalty, seed=params.seed,
            stop=list(params.stop), include_stop_str_in_output=False, stop_token_ids=list(self.eos_ids),
            logprobs=0 if params.logprobs else None, skip_special_tokens=True,
        )

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[list[Completion]]:
        """``params.n`` completions for every prompt, in prompt order."""
        if not prompts:
            return []
        requests = [{"prompt_token_ids": self.encoder.encode(p)} for p in prompts]
        outputs = self.llm.generate(requests, self.sampling_params(params), use_tqdm=False,
                                    lora_request=self.lora_request)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(prompts)} prompts")
        return [[self._completion(o, params) for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs]

    def _completion(self, output: Any, params: GenerationParams) -> Completion:
        ids = [int(t) for t in output.token_ids]
        logprobs = None
        if params.logprobs:
            if output.logprobs is None or len(output.logprobs) < len(ids):
                raise RuntimeError("vLLM returned no log-probabilities for some tokens")
            logprobs = [float(step[t].logprob) for step, t in zip(output.logprobs, ids, strict=False)]
        finish = "length" if output.finish_reason == "length" else "stop"  # stop: eos, stop token or stop string
        return Completion(text=output.text, token_ids=ids, finish_reason=finish, logprobs=logprobs)


def load_vllm(settings: VLLMSettings | None = None, **kwargs) -> VLLMEngine:
    """The ``vllm`` engine of ``settings`` (or of keyword arguments for :class:`VLLMSettings`)."""
    from oa_infer.loader import load_inference_tokenizer, tokenizer_path
    from oa_infer.models import check_adapter_path

    settings = settings if settings is not None else VLLMSettings(**kwargs)
    api = import_vllm()
    if settings.adapter:
        check_adapter_path(settings.adapter, "adapter")
    tokenizer = load_inference_tokenizer(settings)
    config = _model_config(settings)
    if settings.adapter and len(tokenizer) > config.vocab_size:
        raise OAError(f"adapter: '{settings.adapter}' was trained with {len(tokenizer) - config.vocab_size} tokens "
                      "added to the vocabulary, which vLLM's LoRA support cannot load",
                      hint="merge the adapter into its base (oa_infer.merge.merge_adapter) and serve the merged model")
    lora = dict(enable_lora=True, max_lora_rank=settings.max_lora_rank) if settings.adapter else {}
    llm = api.LLM(
        model=settings.model, tokenizer=tokenizer_path(settings), tensor_parallel_size=settings.tensor_parallel_size,
        dtype=settings.dtype, trust_remote_code=settings.trust_remote_code,
        gpu_memory_utilization=settings.gpu_memory_utilization, max_model_len=settings.max_model_len,
        enforce_eager=settings.enforce_eager, logprobs_mode="raw_logprobs", **lora, **settings.engine_kwargs,
    )
    return VLLMEngine(llm, tokenizer, eos_ids=_eos_ids(settings, tokenizer), adapter=settings.adapter, api=api,
                      source=f"the tokenizer in '{tokenizer_path(settings)}'")


def _model_config(settings: GeneratorSettings):
    from transformers import AutoConfig

    from oa_data.hub import is_offline, load_error, resolve_source

    path, local = resolve_source(settings.model, "model")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code,
                                          local_files_only=local or is_offline())
    except (OSError, ValueError) as e:
        raise load_error("model", settings.model, local, e) from None


def _eos_ids(settings: GeneratorSettings, tokenizer: Any) -> list[int]:
    """The eos/end-of-turn ids of the model's saved ``generation_config.json``, else the tokenizer's eos."""
    from transformers import GenerationConfig

    from oa_data.hub import is_offline, resolve_source
    from oa_infer.engines import eos_token_ids

    path, local = resolve_source(settings.model, "model")
    try:
        config = GenerationConfig.from_pretrained(path, local_files_only=local or is_offline())
    except (OSError, ValueError):
        config = None
    return eos_token_ids(SimpleNamespace(generation_config=config), tokenizer)
