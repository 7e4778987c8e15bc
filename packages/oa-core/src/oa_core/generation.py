"""What every text generator takes and gives: the contract behind ``register_generators``.

A :class:`~oa_core.extensions.Generator` plugin's ``load(settings)`` returns an :class:`Engine`. Prompts are raw
text or conversations (lists of ``{"role", "content"}``), which the engine renders with the model's saved chat
template and its generation prompt. :func:`generation_prompt` is what of a record is generated from (``oa infer``,
``oa augment``). Torch-free: callers such as ``oa augment`` use it without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from oa_core.errors import RecordError
from oa_core.schema import Classification, Conversation, Message, Text

Prompt = str | list[dict[str, Any]]  # raw text, or messages rendered with the chat template


def message_dicts(messages: Sequence[Message | dict]) -> list[dict[str, Any]]:
    """``{"role", "content"}`` (and ``name`` when set) of each message."""
    out = []
    for m in messages:
        d = m if isinstance(m, dict) else m.model_dump(exclude_none=True)
        out.append({k: d[k] for k in ("role", "content", "name") if d.get(k) is not None})
    return out


def generation_prompt(record: Any, where: str = "record") -> Prompt:
    """What to generate from: a conversation's messages up to its last user turn, the prompt of a prompt
    record (``PromptCompletion``, ``PromptWithReference``, preference and feedback records), a text."""
    if isinstance(record, Text):
        return record.text
    if isinstance(record, Conversation):
        last_user = max((i for i, m in enumerate(record.messages) if m.role == "user"), default=None)
        if last_user is None:
            raise RecordError(f"{where}: field 'messages': no user message to answer",
                              hint="a conversation prompt needs at least one user turn")
        return message_dicts(record.messages[: last_user + 1])
    if isinstance(record, Classification):
        return record.text if record.text is not None else message_dicts(record.messages or [])
    if hasattr(record, "prompt"):
        return message_dicts(record.prompt)
    raise RecordError(f"{where}: a {type(record).__name__} record has no prompt to generate from")


class GenerationParams(BaseModel):
    """How to sample; every backend maps these one to one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_new_tokens: int = Field(256, ge=1, description="longest completion (tokens)")
    temperature: float = Field(0.0, ge=0, description="sampling temperature; 0 = greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: smallest set of tokens with this mass")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 = no limit")
    repetition_penalty: float = Field(1.0, gt=0, description="penalty for tokens already in the text (1 = none)")
    n: int = Field(1, ge=1, description="completions per prompt")
    seed: int | None = Field(None, description="seed of the sampling (reproducible runs)")
    stop: list[str] = Field(default_factory=list, description="strings that end a completion (matched as text, "
                            "also across several tokens); they are not part of the completion")
    logprobs: bool = Field(False, description="return the log-probability of every generated token")


class GeneratorSettings(BaseModel):
    """Which model a generator loads; backends extend it with their own options."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model folder or hub id (a merged model, or the base of `adapter`)")
    adapter: str | None = Field(None, description="a saved PEFT (LoRA) adapter to apply on top of `model`")
    tokenizer: str | None = Field(None, description="tokenizer folder (default: the adapter's if it has one, else the model's)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weight dtype (auto: as saved)")
    trust_remote_code: bool = Field(False, description="run the model folder's own Python code (trusted sources only)")


@dataclass
class Completion:
    """One generated continuation of a prompt."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]  # stop: an eos/end-of-turn token or a stop string; length: max_new_tokens
    logprobs: list[float] | None = None  # one per token of ``token_ids`` (when asked for)
    num_tokens: int | None = None  # tokens generated, for a backend that counts but gives no ids (an HTTP API)
    prompt_tokens: int | None = None  # tokens of the prompt as the backend counted them (None: not counted)

    @property
    def tokens(self) -> int:
        """Tokens generated: ``num_tokens`` when the backend counted them, else ``len(token_ids)``."""
        return self.num_tokens if self.num_tokens is not None else len(self.token_ids)


class Engine(Protocol):
    """A loaded generator."""

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[list[Completion]]:
        """``params.n`` completions for every prompt, in prompt order."""
        ...
