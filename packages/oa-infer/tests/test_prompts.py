"""What of each record type is generated from, compared with, or scored."""

from __future__ import annotations

import pytest

from oa_core.errors import RecordError
from oa_core.generation import generation_prompt
from oa_core.schema import (
    Classification,
    Conversation,
    PreferencePair,
    PromptCompletion,
    PromptWithReference,
    RankedReplies,
    Text,
)
from oa_infer.prompts import reference, scoring_inputs

U1, A1, U2, A2 = ({"role": r, "content": c} for r, c in
                  (("user", "Hi"), ("assistant", "Hello!"), ("user", "2+2?"), ("assistant", "4")))
SYSTEM = {"role": "system", "content": "Be brief."}


def test_a_conversation_is_answered_after_its_last_user_turn():
    chat = Conversation(messages=[SYSTEM, U1, A1, U2, A2])
    assert generation_prompt(chat) == [SYSTEM, U1, A1, U2]
    assert reference(chat) == "4"
    assert generation_prompt(Conversation(messages=[U1])) == [U1] and reference(Conversation(messages=[U1])) is None
    with pytest.raises(RecordError, match=r"^data.jsonl:3: field 'messages': no user message to answer"):
        generation_prompt(Conversation(messages=[SYSTEM, A1]), "data.jsonl:3")


def test_prompt_records_texts_and_references():
    assert generation_prompt(Text(text="Once upon a time")) == "Once upon a time"
    pc = PromptCompletion(prompt="Q?", completion="A.")
    assert generation_prompt(pc) == [{"role": "user", "content": "Q?"}] and reference(pc) == "A."
    pr = PromptWithReference(prompt=[SYSTEM, U2], reference="4")
    assert generation_prompt(pr) == [SYSTEM, U2] and reference(pr) == "4"
    pair = PreferencePair(prompt="Q?", chosen="good", rejected="bad")
    assert generation_prompt(pair) == [{"role": "user", "content": "Q?"}] and reference(pair) is None
    assert generation_prompt(Classification(text="spam?", label=1)) == "spam?"


def test_scoring_inputs_pair_the_prompt_with_each_continuation():
    q = {"role": "user", "content": "Q?"}
    pair = PreferencePair(prompt="Q?", chosen="good", rejected="bad")
    assert scoring_inputs(pair) == [("chosen", [q, {"role": "assistant", "content": "good"}]),
                                    ("rejected", [q, {"role": "assistant", "content": "bad"}])]
    ranked = RankedReplies(prompt="Q?", replies=["best", "worse"])
    assert [name for name, _ in scoring_inputs(ranked)] == ["reply_0", "reply_1"]
    assert scoring_inputs(ranked)[1][1][-1] == {"role": "assistant", "content": "worse"}
    assert scoring_inputs(PromptCompletion(prompt="Q?", completion="A.")) == [
        ("completion", [q, {"role": "assistant", "content": "A."}])]
    assert scoring_inputs(Conversation(messages=[U1, A1])) == [("input", [U1, A1])]
    assert scoring_inputs(Text(text="plain")) == [("input", "plain")]
    assert scoring_inputs(Classification(messages=[U1], label=0)) == [("input", [U1])]
