"""Generation backends behind ``register_generators``: ``hf`` (transformers) and ``vllm``.

Both implement :class:`oa_core.generation.Engine` and end completions the same way: the tokens up to and
including the first eos/end-of-turn token, or up to the token that completes a stop string (the text is cut
before it), both ``stop``; else ``max_new_tokens`` tokens (``length``). The ``hf`` engine does it with
:func:`finish_completion`, vLLM by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oa_core.generation import Completion


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the model's ``generation_config.eos_token_id`` (oa-train saves
    [end-of-turn, eos] there), else the tokenizer's eos."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None) if config is not None else None
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, list | tuple) else [ids])]


def pad_token_id(tokenizer: Any, eos_ids: Sequence[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return eos_ids[0] if eos_ids else 0


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def finish_completion(tokenizer: Any, ids: Sequence[int], *, eos_ids: Sequence[int], stop: Sequence[str],
                      max_new_tokens: int, logprobs: Sequence[float] | None = None) -> Completion:
    """The completion of generated ``ids`` (anything after the end, e.g. padding, is dropped).

    The first eos/end-of-turn token ends it (kept in ``token_ids``, not in ``text``). A stop string ends it at
    the token that completes it: ``token_ids`` keep that token, ``text`` ends before the stop string.
    """
    ids = [int(i) for i in ids]
    eos = set(eos_ids)
    end = next((k + 1 for k, t in enumerate(ids) if t in eos), None)
    stopped = end is not None
    if stopped:
        ids = ids[:end]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = _first_stop(text, stop)
    if cut is not None:
        lo, hi = 1, len(ids)  # the fewest tokens whose text holds a stop string
        while lo < hi:
            mid = (lo + hi) // 2
            if _first_stop(tokenizer.decode(ids[:mid], skip_special_tokens=True), stop) is None:
                lo = mid + 1
            else:
                hi = mid
        ids = ids[:lo]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        text = text[: _first_stop(text, stop)]
        stopped = True
    finish = "stop" if stopped or len(ids) < max_new_tokens else "length"
    lp = [float(x) for x in logprobs[: len(ids)]] if logprobs is not None else None
    return Completion(text=text, token_ids=ids, finish_reason=finish, logprobs=lp)
