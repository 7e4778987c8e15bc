"""Scores of completions for augmenters that rank them: a registered reward function (torch-free), or a reward
model scored by oa-infer (``pip install 'oa-augment[local]'``), loaded once, on first use."""

from __future__ import annotations

import threading
from typing import Any

from oa_augment.config import RewardSettings
from oa_augment.records import response_text
from oa_core.errors import OAError


def make_scorer(settings: RewardSettings, registry: Any):
    """``score(prompt, completions, record) -> list[float | None]``."""
    if settings.function is not None:
        return _function_scorer(settings, registry)
    return _ModelScorer(settings)


def _text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")


def _function_scorer(settings: RewardSettings, registry: Any):
    fn = registry.get("reward_function", settings.function)
    options = fn.options.model_validate(settings.options).model_dump() if fn.options is not None else dict(settings.options)

    def score(prompt: Any, completions: list[str], record: Any) -> list[float | None]:
        n = len(completions)
        columns = {}
        for column in fn.columns:
            value = response_text(record) if column == "reference" else getattr(record, column, None)
            if value is None:
                value = record.metadata.get(column)
            if value is None:
                raise OAError(f"reward function '{settings.function}' needs column '{column}', which this "
                              f"{type(record).__name__} record does not have", hint="use records that have it")
            columns[column] = [value] * n
        scores = list(fn.fn([_text(prompt)] * n, completions, **columns, **options))
        if len(scores) != n:
            raise OAError(f"reward function '{settings.function}' gave {len(scores)} scores for {n} completions")
        return [None if s is None else float(s) for s in scores]

    return score


class _ModelScorer:
    def __init__(self, settings: RewardSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._model = None

    def __call__(self, prompt: Any, completions: list[str], record: Any) -> list[float | None]:
        try:
            from oa_core.generation import GeneratorSettings
            from oa_infer.loader import load_pretrained
            from oa_infer.scoring import score
        except ImportError:
            raise OAError("reward.model needs oa-infer (torch), which is not installed",
                          hint="pip install './packages/oa-augment[local]', or use reward.function") from None
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        with self._lock:
            if self._model is None:
                self._model = load_pretrained(GeneratorSettings(model=self.settings.model), seq_cls=True,
                                              device=self.settings.device)
            model, tokenizer = self._model
            scores = score(model, tokenizer, [messages + [{"role": "assistant", "content": c}] for c in completions],
                           self.settings.batch_size)
        return [s.score if s.score is not None else (s.probs[-1] if s.probs else None) for s in scores]
