"""The built-in reward functions as oa-infer registers them: reward_model scores the prompt's conversation with the
completion as the assistant's reply, through oa_infer.scoring, loaded once."""

from __future__ import annotations

import pytest


def test_reward_model_scores_the_conversation_with_the_completion_as_reply(reward_dir):
    from oa_core.generation import GeneratorSettings
    from oa_core.plugins import get_registry
    from oa_infer.loader import load_pretrained
    from oa_infer.scoring import score

    entry = get_registry().get("reward_function", "reward_model")
    assert entry.columns == ("messages",)
    options = entry.options.model_validate({"path": reward_dir, "device": "cpu", "scale": 2.0, "shift": -1.0}).model_dump()
    entry.fn.prepare(**options)
    loaded = dict(entry.fn.loaded)
    model, tokenizer = load_pretrained(GeneratorSettings(model=reward_dir), seq_cls=True, device="cpu")
    question = [{"role": "user", "content": "What is 2+2?"}]
    got = entry.fn(["What is 2+2?", "Say hi"], ["It is 4.", "hi"], messages=[question, None], **options)
    want = score(model, tokenizer, [[*question, {"role": "assistant", "content": "It is 4."}], "Say hihi"], 8)
    assert got == pytest.approx([2.0 * s.score - 1.0 for s in want], abs=1e-5)
    assert entry.fn.loaded == loaded  # prepare loaded it; the call reused it


def test_reward_model_options_are_checked():
    from pydantic import ValidationError

    from oa_core.plugins import get_registry

    options = get_registry().get("reward_function", "reward_model").options
    with pytest.raises(ValidationError, match="path"):
        options.model_validate({})
    with pytest.raises(ValidationError, match="batch_size"):
        options.model_validate({"path": "x", "batch_size": 0})
