"""The ``hf`` generator: transformers' ``generate`` on a loaded model (plus a LoRA adapter), in batches.

Made from settings (``load_hf(HFSettings(model=...))``) or from a model and tokenizer already in memory
(``HFEngine(model, tokenizer)``, as the trainer's evaluation and on-policy rollouts use it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from oa_core.errors import OAError
from oa_core.generation import Completion, GenerationParams, GeneratorSettings, Prompt
from oa_infer.engines import eos_token_ids, finish_completion, pad_token_id
from oa_infer.prompts import PromptEncoder


class CompiledDecoding(BaseModel):
    """The ``compile`` option of the hf generator, shared by oa-infer's settings and oa-train's GRPO rollouts."""

    compile: bool | Literal["auto"] = Field(
        "auto", description="a static KV cache and a compiled decoding step (CUDA graphs on a GPU); prompt widths "
        "are padded to a power of two so that it compiles a few times per run (auto: on a GPU, without continuous "
        "batching)")

    @model_validator(mode="after")
    def _one_cache(self):
        if self.compile is True and getattr(self, "continuous_batching", False):
            raise ValueError("compile: true and continuous_batching: true exclude each other (continuous batching "
                             "has its own paged cache); set one of them to false")
        return self


class HFSettings(GeneratorSettings, CompiledDecoding):
    """The ``hf`` generator: transformers ``generate`` in length-sorted, left-padded batches."""

    batch_size: int = Field(16, ge=1, description="sequences generated together (prompts x n)")
    device: str = Field("auto", description="cpu, cuda, cuda:1 ... (auto: the GPU when there is one)")
    attn_implementation: str | None = Field(
        None, description="eager, sdpa, flash_attention_2 ... (default: transformers' choice)")
    use_cache: bool = Field(True, description="keep the attention keys/values of earlier tokens (KV cache)")
    continuous_batching: bool = Field(
        False, description="transformers' continuous batching (generate_batch): a paged KV cache refilled with "
        "waiting prompts as others finish, no padding; stop strings are cut afterwards, no repetition_penalty")


def compile_wanted(setting: bool | str, device: Any, continuous_batching: bool) -> bool:
    """Whether ``compile`` (true, false or auto) means compiled decoding on ``device``: auto means on a GPU."""
    if setting == "auto":
        return getattr(device, "type", str(device)).startswith("cuda") and not continuous_batching
    return bool(setting)


class HFEngine:
    """Batched generation with transformers, :class:`oa_core.generation.Engine` for ``model`` and ``tokenizer``.

    Prompts are encoded by :class:`~oa_infer.prompts.PromptEncoder` (conversations through the tokenizer's saved
    chat template, with the generation prompt), sorted by length and generated ``batch_size`` sequences at a time
    with left padding; results come back in prompt order. Parameters map one to one onto ``generate`` (temperature
    0: greedy); generation ends at the model's ``generation_config.eos_token_id`` tokens (oa-train saves
    [end-of-turn, eos]) and at stop strings, matched on the decoded text of each sequence at every step, so a stop
    string made of several tokens stops it too. ``seed`` seeds the sampling of one ``generate`` call without
    touching the caller's random state.

    Log-probabilities (``params.logprobs``) are those of the model's own distribution: log-softmax of the raw
    logits, before repetition penalty, temperature, top-k and top-p (the distribution a trainer's log-probs use).

    ``compile=True`` generates with a static KV cache and transformers' compiled decoding step (``torch.compile``,
    CUDA graphs on a GPU): the step's hundreds of kernel launches become one graph replay. Prompt widths are padded
    up to a power of two (:func:`bucket_width`) and transformers keeps the largest cache length seen, so a run
    compiles a few times (once per larger power of two, and per batch size), not per batch. Should compilation
    fail (an unsupported model patch, a missing compiler), a warning says so and the engine generates without it
    from then on.

    ``continuous_batching=True`` uses transformers' ``generate_batch``: requests are scheduled into a paged KV
    cache and finished sequences are replaced by waiting ones at once, with no padding and no waiting for the
    longest sequence of a batch (throughput on a GPU; on CPU it runs, with a cache sized to the work). There,
    stop strings are applied after generation (each sequence runs to eos or ``max_new_tokens``), log-probs come
    from one extra forward pass, and repetition_penalty is refused (transformers would drop it silently).
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, use_cache: bool = True,
                 continuous_batching: bool = False, compile: bool = False, source: str = "the tokenizer"):
        if compile and continuous_batching:
            raise OAError("compile and continuous_batching: choose one",
                          hint="continuous batching has its own paged cache; set compile: false")
        self.model = model
        self.compile = compile
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.continuous_batching = continuous_batching
        self.encoder = PromptEncoder(tokenizer, source)
        self.eos_ids = eos_token_ids(_inner(model), tokenizer)
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)

    @classmethod
    def from_settings(cls, model: Any, tokenizer: Any, settings: Any, *, source: str) -> HFEngine:
        """The engine for ``model`` with the options of ``settings`` (:class:`HFSettings`, or a trainer's settings
        with batch_size, use_cache, continuous_batching and compile)."""
        device = next(model.parameters()).device
        return cls(model, tokenizer, batch_size=settings.batch_size, use_cache=settings.use_cache,
                   continuous_batching=settings.continuous_batching, source=source,
                   compile=compile_wanted(settings.compile, device, settings.continuous_batching))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[list[Completion]]:
        """``params.n`` completions for every prompt, in prompt order."""
        return self.generate_ids([self.encoder.encode(p) for p in prompts], params)

    def generate_ids(self, encoded: Sequence[Sequence[int]], params: GenerationParams) -> list[list[Completion]]:
        """:meth:`generate` for prompts already encoded as token ids (e.g. a trainer's tokenized examples)."""
        encoded = [list(ids) for ids in encoded]
        if params.temperature == 0 and params.n > 1:  # greedy samples are all the same sequence
            once = self.generate_ids(encoded, params.model_copy(update={"n": 1}))
            return [[_copy(c) for _ in range(params.n)] for (c,) in once]
        if not encoded:
            return []
        import torch

        self.eos_ids = eos_token_ids(_inner(self.model), self.tokenizer)  # as the model's config says now
        with _eval_mode(self.model):
            if self.continuous_batching:
                return self._generate_continuous(encoded, params)
            order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
            per_batch = max(1, self.batch_size // params.n)
            out: list[list[Completion]] = [[] for _ in encoded]
            with torch.inference_mode(), _seeded(params.seed, self.device), _plain_generation_config(self.model):
                for start in range(0, len(order), per_batch):
                    idx = order[start : start + per_batch]
                    batch = self._generate_batch([encoded[i] for i in idx], params)
                    for i, completions in zip(idx, batch, strict=True):
                        out[i] = completions
            return out

    def _generate_batch(self, batch: list[list[int]], params: GenerationParams) -> list[list[Completion]]:
        import torch

        if self.compile:
            try:
                return self._generate_padded(batch, params, compiled=True)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - a compiler failure must not end the run: generate eagerly
                self.compile = False
                warnings.warn(f"compiled decoding failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              "generating without it (compile: false)", stacklevel=2)
        return self._generate_padded(batch, params, compiled=False)

    def _generate_padded(self, batch: list[list[int]], params: GenerationParams, *, compiled: bool):
        import torch

        width = max(len(ids) for ids in batch)
        if compiled:
            width = bucket_width(width)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device)
        stopping = [StopOnText(self.tokenizer, params.stop, width)] if params.stop else None
        extra = {"cache_implementation": "static", "compile_config": _compile_config(self.device)} if compiled else {}
        out = self.model.generate(
            input_ids=input_ids, attention_mask=mask, stopping_criteria=stopping,
            generation_config=self._generation_config(params, return_dict_in_generate=True,
                                                      output_logits=params.logprobs, **extra),
        )
        new = out.sequences[:, width:]
        logprobs = None
        if params.logprobs:
            steps = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # (rows, steps, vocab): raw logits
            logprobs = steps.gather(-1, new[:, : steps.shape[1], None]).squeeze(-1).tolist()
        rows = [self._finish(new[r].tolist(), params, logprobs[r] if logprobs else None) for r in range(new.shape[0])]
        return [rows[k * params.n : (k + 1) * params.n] for k in range(len(batch))]

    def _finish(self, ids: list[int], params: GenerationParams, logprobs: list[float] | None) -> Completion:
        return finish_completion(self.tokenizer, ids, eos_ids=self.eos_ids, stop=params.stop,
                                 max_new_tokens=params.max_new_tokens, logprobs=logprobs)

    def _generation_config(self, params: GenerationParams, **extra):
        from transformers import GenerationConfig

        sampling = params.temperature > 0
        values: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens, do_sample=sampling, num_return_sequences=params.n,
            repetition_penalty=params.repetition_penalty, eos_token_id=self.eos_ids or None,
            pad_token_id=self.pad_id, use_cache=self.use_cache,
        )
        if sampling:
            values.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        return GenerationConfig(**values, **extra)

    def _generate_continuous(self, encoded: list[list[int]], params: GenerationParams) -> list[list[Completion]]:
        import torch
        from transformers import ContinuousBatchingConfig

        if params.repetition_penalty != 1.0:
            raise OAError("repetition_penalty: not supported with continuous batching",
                          hint="set continuous_batching: false, or repetition_penalty: 1")
        # each sample its own request: transformers 5.17 returns only the first of num_return_sequences (its
        # "children" are missing from the results), 5.19 all of them
        requests = [ids for ids in encoded for _ in range(params.n)]
        cb = dict(seed=params.seed)
        if self.device.type == "cpu":  # transformers would size the cache from all of the machine's memory
            page = 32
            cb.update(page_size=page, max_batch_tokens=512, num_blocks=sum(
                -(-(len(ids) + params.max_new_tokens) // page) for ids in requests) + 1)
        config = self._generation_config(params.model_copy(update={"n": 1}))
        devices = [self.device] if self.device.type == "cuda" else []
        # transformers reseeds the global generator for it: the caller's random state is restored afterwards
        with _plain_generation_config(self.model), torch.random.fork_rng(devices=devices):
            results = list(_inner(self.model).generate_batch(
                requests, generation_config=config, continuous_batching_config=ContinuousBatchingConfig(**cb),
                progress_bar=False).values())
        failed = [r.error for r in results if r.error is not None]
        if len(results) != len(requests) or failed:
            raise RuntimeError(f"continuous batching returned {len(results)} of {len(requests)} "
                               f"sequences{f' ({failed[0]})' if failed else ''}")
        ids = [list(r.generated_tokens) for r in results]
        logprobs = None
        if params.logprobs:
            logprobs = sequence_logprobs(self.model, requests, ids, batch_size=self.batch_size, pad_id=self.pad_id)
        rows = [self._finish(t, params, logprobs[k] if logprobs else None) for k, t in enumerate(ids)]
        return [rows[k * params.n : (k + 1) * params.n] for k in range(len(encoded))]


def bucket_width(width: int) -> int:
    """The padded prompt width of compiled decoding: the next power of two, at least 64."""
    return max(64, 1 << (width - 1).bit_length())


def _compile_config(device: Any):
    """transformers' default compile settings for decoding (``reduce-overhead``: CUDA graphs), allowed on any
    device (on CPU it compiles with inductor's C++ backend: the tests use that)."""
    from transformers import CompileConfig

    config = CompileConfig()
    config._compile_all_devices = device.type != "cuda"
    return config


class StopOnText:
    """A stopping criterion: a sequence is done once the decoded text of its last tokens holds a stop string
    (the window covers the longest stop string even at one byte per token)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_width: int):
        self.tokenizer, self.stop, self.start = tokenizer, [s for s in stop if s], prompt_width
        self.window = 4 * max(len(s) for s in self.stop) + 8

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        tail = input_ids[:, max(self.start, input_ids.shape[1] - self.window):]
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def sequence_logprobs(model: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
                      batch_size: int = 16, pad_id: int = 0) -> list[list[float]]:
    """The model's log-probability of each completion token after its prompt (teacher forcing, right-padded)."""
    rows = [(list(p) + list(c), [IGNORE_INDEX] * len(p) + list(c)) for p, c in zip(prompts, completions, strict=True)]
    return label_logprobs(model, rows, batch_size=batch_size, pad_id=pad_id)


IGNORE_INDEX = -100


def label_logprobs(model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 16,
                   pad_id: int = 0) -> list[list[float]]:
    """For each ``(input_ids, labels)`` row, the model's log-probability of every label token (``labels[t]`` is
    predicted from the positions before ``t``; -100 marks no target, Hugging Face's convention, as oa-data's SFT
    examples have it), in order: float32 log-softmax of the logits, right-padded batches, no gradients."""
    import torch

    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(rows), batch_size):
        chunk = [(list(ids), list(labels)) for ids, labels in rows[start : start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([r + [pad_id] * (width - len(r)) for r, _ in chunk], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in chunk], device=device)
        labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in chunk], device=device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            targets = labels[:, 1:]
            at = targets != IGNORE_INDEX
            picked = logits[at].float().log_softmax(-1).gather(-1, targets[at][:, None]).squeeze(-1)
        values, at_value = picked.tolist(), 0
        for n in at.sum(-1).tolist():
            out.append(values[at_value : at_value + n])
            at_value += n
    return out


def _copy(c: Completion) -> Completion:
    return dataclasses.replace(c, token_ids=list(c.token_ids), logprobs=None if c.logprobs is None else list(c.logprobs))


@contextlib.contextmanager
def _eval_mode(model: Any):
    """The model in eval mode (no dropout) inside the block, then back in the mode it was in (a trainer's model)."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _inner(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (the one whose ``generate`` runs)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def _plain_generation_config(model: Any):
    """Generate with only the token ids of the model's saved generation config, so that its sampling defaults
    (e.g. a top_p of 0.9) do not mix into the parameters asked for."""
    from transformers import GenerationConfig

    inner = _inner(model)
    saved = getattr(inner, "generation_config", None)
    if saved is None:
        yield
        return
    inner.generation_config = GenerationConfig(
        bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id, pad_token_id=saved.pad_token_id)
    try:
        yield
    finally:
        inner.generation_config = saved


@contextlib.contextmanager
def _seeded(seed: int | None, device):
    """``seed`` for the sampling inside the block; the caller's random state is restored afterwards."""
    if seed is None:
        yield
        return
    import torch

    devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def load_hf(settings: HFSettings | None = None, **kwargs) -> HFEngine:
    """The ``hf`` engine of ``settings`` (or of keyword arguments for :class:`HFSettings`)."""
    from oa_infer.loader import load_pretrained, tokenizer_path

    settings = settings if settings is not None else HFSettings(**kwargs)
    model, tokenizer = load_pretrained(settings, attn_implementation=settings.attn_implementation,
                                       device=settings.device)
    return HFEngine.from_settings(model, tokenizer, settings, source=f"the tokenizer in '{tokenizer_path(settings)}'")

