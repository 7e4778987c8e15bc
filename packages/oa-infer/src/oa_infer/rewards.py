"""Built-in reward functions (``register_reward_functions``): ``fn(prompts, completions, **columns, **options)
-> list[float | None]``, one score per completion, as RL methods (``method: grpo``) call them.

- ``numeric_answer``: 1 when the completion's final number equals the reference's (GSM8K-style; the checking of
  :func:`oa_infer.metrics.answer_correct`), else 0;
- ``regex``: a format check — 1 when the completion matches a pattern, else 0 (values configurable);
- ``length``: 1 within a target length, falling linearly to 0 at twice or none of it;
- ``reward_model``: the score of a trained reward model (``oa train`` with ``method: rm``) for the prompt's
  conversation followed by the completion, through :func:`oa_infer.scoring.score`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from oa_core.errors import OAError


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- numeric answers


class NumericAnswerOptions(_Options):
    correct: float = Field(1.0, description="score of a completion whose final number is the reference's")
    wrong: float = Field(0.0, description="score of any other completion (no number, or another one)")


def numeric_answer(prompts: list[str], completions: list[str], reference: list[str], correct: float = 1.0,
                   wrong: float = 0.0, **_: Any) -> list[float]:
    """``correct`` where the completion's final number (after ``####`` if it writes one, else its last number)
    equals the reference's, else ``wrong`` (:func:`oa_infer.metrics.answer_correct`)."""
    from oa_infer.metrics import answer_correct

    return [correct if answer_correct(c, r) else wrong for c, r in zip(completions, reference, strict=True)]


# ---------------------------------------------------------------- format


FLAGS = {"ignorecase": re.IGNORECASE, "multiline": re.MULTILINE, "dotall": re.DOTALL}


class RegexOptions(_Options):
    pattern: str = Field(description="a Python regular expression, e.g. '^<think>.*?</think>\\s*<answer>.*?</answer>$'")
    mode: Literal["search", "match", "fullmatch"] = Field(
        "search", description="search: anywhere in the completion; match: at its start; fullmatch: the whole of it")
    flags: list[Literal["ignorecase", "multiline", "dotall"]] = Field(default_factory=list, description="re flags")
    matched: float = Field(1.0, description="score of a completion that matches")
    unmatched: float = Field(0.0, description="score of one that does not")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v


def regex(prompts: list[str], completions: list[str], pattern: str, mode: str = "search", flags=(),
          matched: float = 1.0, unmatched: float = 0.0, **_: Any) -> list[float]:
    """``matched`` where the completion matches ``pattern`` (``mode``: search, match or fullmatch), else
    ``unmatched``."""
    compiled = re.compile(pattern, sum(FLAGS[f] for f in flags))
    test = getattr(compiled, mode)
    return [matched if test(c) else unmatched for c in completions]


# ---------------------------------------------------------------- length


class LengthOptions(_Options):
    target: int = Field(description="the length wanted")
    unit: Literal["characters", "words"] = Field("words", description="what is counted")
    tolerance: int = Field(0, ge=0, description="within target ± tolerance the score is 1")

    @field_validator("target")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v


def length(prompts: list[str], completions: list[str], target: int, unit: str = "words", tolerance: int = 0,
           **_: Any) -> list[float]:
    """1 within ``target ± tolerance`` (``unit``: characters or words), falling linearly to 0 at ``tolerance +
    target`` away from it: ``max(0, 1 - max(0, |n - target| - tolerance) / target)``."""
    out = []
    for c in completions:
        n = len(c) if unit == "characters" else len(c.split())
        out.append(max(0.0, 1.0 - max(0, abs(n - target) - tolerance) / target))
    return out


# ---------------------------------------------------------------- a trained reward model


class RewardModelOptions(_Options):
    path: str = Field(description="the reward model: an `oa train` output of method rm (its model/ folder), a "
                      "checkpoint, or the base of `adapter`")
    adapter: str | None = Field(None, description="a saved SEQ_CLS adapter (LoRA reward model) on `path`")
    batch_size: int = Field(8, ge=1, description="sequences scored together")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weight dtype")
    device: str = Field("auto", description="cpu, cuda, cuda:1 ... (auto: the GPU when there is one)")
    trust_remote_code: bool = Field(False, description="run the model folder's own code (trusted sources only)")
    scale: float = Field(1.0, description="the score is multiplied by this")
    shift: float = Field(0.0, description="and this is added (e.g. the model's mean score on good answers, negated)")


class RewardModelScore:
    """The ``reward_model`` reward: ``(score(prompt conversation + the completion as the assistant's answer) ×
    scale + shift``. A text prompt (no messages) is scored as the text followed by the completion. The model loads
    once (:meth:`prepare`) and is kept per path, adapter, dtype and device."""

    columns = ("messages",)

    def __init__(self):
        self.loaded: dict[tuple, tuple[Any, Any]] = {}

    def _load(self, path: str, adapter: str | None, dtype: str, device: str, trust_remote_code: bool):
        from oa_core.generation import GeneratorSettings
        from oa_infer.loader import load_pretrained

        key = (path, adapter, dtype, device, trust_remote_code)
        if key not in self.loaded:
            settings = GeneratorSettings(model=path, adapter=adapter, dtype=dtype, trust_remote_code=trust_remote_code)
            try:
                self.loaded[key] = load_pretrained(settings, seq_cls=True, device=device)
            except OAError as e:
                raise OAError(f"reward_model: {e.message}", hint=e.hint) from None
        return self.loaded[key]

    def prepare(self, *, path: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto",
                trust_remote_code: bool = False, **_: Any) -> None:
        self._load(path, adapter, dtype, device, trust_remote_code)

    def __call__(self, prompts: list[str], completions: list[str], messages: list[Any], *, path: str,
                 adapter: str | None = None, batch_size: int = 8, dtype: str = "auto", device: str = "auto",
                 trust_remote_code: bool = False, scale: float = 1.0, shift: float = 0.0, **_: Any) -> list[float]:
        from oa_infer.scoring import score

        model, tokenizer = self._load(path, adapter, dtype, device, trust_remote_code)
        inputs = [p + c if m is None else [*m, {"role": "assistant", "content": c}]
                  for p, c, m in zip(prompts, completions, messages, strict=True)]
        return [s.score * scale + shift for s in score(model, tokenizer, inputs, batch_size)]


def register(register_fn) -> None:
    """Register the built-in reward functions."""
    from oa_core.extensions import RewardFunction

    register_fn("numeric_answer", RewardFunction(
        numeric_answer, "GSM8K-style: 1 when the completion's final number (after ####, else its last) equals the "
        "reference's", columns=("reference",), options=NumericAnswerOptions))
    register_fn("regex", RewardFunction(regex, "format: 1 when the completion matches a regular expression",
                                        options=RegexOptions))
    register_fn("length", RewardFunction(length, "1 within a target length (words or characters), linearly less "
                                         "away from it", options=LengthOptions))
    register_fn("reward_model", RewardFunction(
        RewardModelScore(), "the score of a trained reward model (method rm) for the prompt + completion",
        columns=RewardModelScore.columns, options=RewardModelOptions))
